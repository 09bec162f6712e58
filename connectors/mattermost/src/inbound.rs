//! WebSocket events (and posts read back after a gap) to events.
//!
//! Read as JSON values, field by field: a field the bridge does not need may be anything, a
//! missing one it needs drops that event (logged without content), never the connection.
//!
//! - A post's remote id is its id (unique on the server); a reply in a thread carries its
//!   `root_id` as `thread_root`.
//! - Our own posts (our user id) are never bridged back; system posts (`type` `system_…`) are
//!   not bridged.
//! - The text is Mattermost's Markdown (CommonMark); the formatted body its HTML. A `/me` post
//!   (`type` `me`) is an action.
//! - `post_edited` is an edit, `post_deleted` a delete, `reaction_added`/`_removed` reactions
//!   (named emoji translated, others `:name:`).
//! - Files are offered through signed links of the daemon (`media_public_url`), since
//!   Mattermost's need the token; without it, they are named.

use crate::api::Api;
use crate::config::valid_id;
use passerelle_sdk::markdown::{self, Flavor};
use passerelle_sdk::signed_link::SignedLinks;
use passerelle_sdk::{
    Content, EmitError, Emitter, Event, EventKind, Formatted, MessageKind, RoomId, Sender,
    StateHandle, Text, Timestamp, emoji, html,
};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The most characters of a post taken (the server's own limit is 16,383 by default).
const MAX_TEXT: usize = 65_535;
/// The largest embedded JSON (`data.post`, `data.reaction`) read.
const MAX_EMBEDDED: usize = 1024 * 1024;
/// The most people cached.
const MAX_CACHED: usize = 50_000;

/// One WebSocket event, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// `posted`.
    Post(Value),
    /// `post_edited`.
    Edit(Value),
    /// `post_deleted`.
    Delete(Value),
    /// `reaction_added` / `reaction_removed`.
    Reaction {
        /// The post reacted to.
        post: String,
        /// Who.
        user: String,
        /// The emoji's name.
        name: String,
        /// Taken back.
        removed: bool,
    },
    /// `user_updated`: a person's name may have changed.
    Profile(String),
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// An embedded JSON string (`data.post`), bounded.
fn embedded(data: &Value, k: &str) -> Option<Value> {
    let text = s(data, k)?;
    if text.len() > MAX_EMBEDDED {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// The `seq` and classified event of one WebSocket frame; `None` for what is not an event.
pub fn frame(text: &str) -> Option<(Option<u64>, Option<Incoming>)> {
    if text.len() > 4 * 1024 * 1024 {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    let event = s(&v, "event")?;
    let seq = v.get("seq").and_then(Value::as_u64);
    let data = v.get("data").cloned().unwrap_or(Value::Null);
    let incoming = match event {
        "posted" => embedded(&data, "post").map(Incoming::Post),
        "post_edited" => embedded(&data, "post").map(Incoming::Edit),
        "post_deleted" => embedded(&data, "post").map(Incoming::Delete),
        "reaction_added" | "reaction_removed" => embedded(&data, "reaction").and_then(|r| {
            Some(Incoming::Reaction {
                post: s(&r, "post_id").filter(|p| valid_id(p))?.to_owned(),
                user: s(&r, "user_id").filter(|u| valid_id(u))?.to_owned(),
                name: s(&r, "emoji_name")?.chars().take(64).collect(),
                removed: event == "reaction_removed",
            })
        }),
        "user_updated" => data
            .get("user")
            .and_then(|u| s(u, "id"))
            .map(|id| Incoming::Profile(id.to_owned())),
        _ => None,
    };
    Some((seq, incoming))
}

/// A person as shown: nickname, else first and last name, else username.
pub fn name_of(user: &Value) -> Option<String> {
    let pick = |k: &str| s(user, k).map(str::trim).filter(|n| !n.is_empty());
    let full = match (pick("first_name"), pick("last_name")) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (Some(f), None) => Some(f.to_owned()),
        (None, Some(l)) => Some(l.to_owned()),
        _ => None,
    };
    let name = pick("nickname")
        .map(str::to_owned)
        .or(full)
        .or_else(|| pick("username").map(str::to_owned))?;
    Some(name.chars().filter(|c| !c.is_control()).take(80).collect())
}

/// Who we are and what the rooms are.
#[derive(Default)]
pub struct Directory {
    /// Our user id.
    pub me: RwLock<String>,
    rooms: RwLock<HashMap<String, RoomId>>,
    channels: RwLock<HashMap<RoomId, String>>,
    people: RwLock<HashMap<String, String>>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Directory {
    /// Our user id.
    pub fn me(&self) -> String {
        read(&self.me).clone()
    }
    /// Binds a room to its channel.
    pub fn bind(&self, room: &RoomId, channel: &str) {
        write(&self.rooms).insert(channel.to_owned(), room.clone());
        write(&self.channels).insert(room.clone(), channel.to_owned());
    }
    /// The room a channel is.
    pub fn room_of(&self, channel: &str) -> Option<RoomId> {
        read(&self.rooms).get(channel).cloned()
    }
    /// The channel of a room.
    pub fn channel_of(&self, room: &RoomId) -> Option<String> {
        read(&self.channels).get(room).cloned()
    }
    /// Every room's channel.
    pub fn channels(&self) -> Vec<String> {
        read(&self.channels).values().cloned().collect()
    }
    /// A person's shown name, from the cache or `GET /users/{id}` (once).
    pub async fn person(&self, api: &Api, user: &str) -> Option<String> {
        if let Some(n) = read(&self.people).get(user) {
            return Some(n.clone());
        }
        let v = api.get(&format!("users/{user}")).await.ok()?;
        let name = name_of(&v)?;
        let mut people = write(&self.people);
        if people.len() < MAX_CACHED {
            people.insert(user.to_owned(), name.clone());
        }
        Some(name)
    }
    /// Forgets a person's name.
    pub fn forget(&self, user: &str) {
        write(&self.people).remove(user);
    }
}

/// Turns Mattermost's events into the bus's and hands them to the daemon.
pub struct Intake {
    /// The REST API (names).
    pub api: Api,
    /// The directory.
    pub dir: Arc<Directory>,
    /// To the daemon.
    pub emitter: Emitter,
    /// Signed links for files.
    pub links: Option<SignedLinks>,
    /// Where each channel's last post seen is kept.
    pub state: StateHandle,
}

/// The state key of a channel's last post seen (its `create_at`).
pub fn seen_key(channel: &str) -> String {
    passerelle_sdk::state::key(&["seen", channel])
}

/// The content of a post's Markdown.
pub fn content_of(message: &str, action: bool) -> Content {
    let text: String = message.chars().take(MAX_TEXT).collect();
    let formatted = markdown::to_html(&text, Flavor::CommonMark);
    let mut content = Content::plain(text);
    if html::has_markup(&formatted) {
        content.formatted = Some(Formatted::Html(Text::new(formatted)));
    }
    if action {
        content.kind = MessageKind::Emote;
    }
    content
}

impl Intake {
    /// Takes one classified event; returns once its event is stored.
    pub async fn take(&self, incoming: Incoming) -> Result<(), EmitError> {
        let me = self.dir.me();
        match incoming {
            Incoming::Profile(user) => {
                self.dir.forget(&user);
                Ok(())
            }
            Incoming::Post(post) => {
                let Some((room, id)) = self.place(&post, &me) else {
                    return Ok(());
                };
                let channel = s(&post, "channel_id").unwrap_or("").to_owned();
                let kind = s(&post, "type").unwrap_or("");
                let content = self.content(&post, kind == "me");
                let mut event =
                    Event::new(room, self.sender(&post).await, EventKind::Message(content))
                        .with_remote_id(id);
                if let Some(at) = post.get("create_at").and_then(Value::as_u64) {
                    event.at = Timestamp(at);
                }
                if let Some(root) = s(&post, "root_id").filter(|r| valid_id(r)) {
                    event.thread_root = Some(root.to_owned().into());
                }
                self.emitter.emit(event).await?;
                if let Some(at) = post.get("create_at").and_then(Value::as_u64) {
                    self.seen(&channel, at).await;
                }
                Ok(())
            }
            Incoming::Edit(post) => {
                let Some((room, id)) = self.place(&post, &me) else {
                    return Ok(());
                };
                let content = self.content(&post, s(&post, "type") == Some("me"));
                let event = Event::new(
                    room,
                    self.sender(&post).await,
                    EventKind::Edit {
                        target: id.into(),
                        content,
                    },
                );
                self.emitter.emit(event).await.map(|_| ())
            }
            Incoming::Delete(post) => {
                let Some((room, id)) = self.place(&post, &me) else {
                    return Ok(());
                };
                let sender = Sender::new(s(&post, "user_id").unwrap_or("mattermost").to_owned());
                let event = Event::new(room, sender, EventKind::Delete { target: id.into() });
                self.emitter.emit(event).await.map(|_| ())
            }
            Incoming::Reaction {
                post,
                user,
                name,
                removed,
            } => {
                if user == me {
                    return Ok(());
                }
                // The reaction names its post only: find the post's channel.
                let Ok(p) = self.api.get(&format!("posts/{post}")).await else {
                    return Ok(());
                };
                let Some(room) = s(&p, "channel_id").and_then(|c| self.dir.room_of(c)) else {
                    return Ok(());
                };
                let mut sender = Sender::new(user.clone());
                sender.display_name = self.dir.person(&self.api, &user).await;
                let event = Event::new(
                    room,
                    sender,
                    EventKind::Reaction {
                        target: post.into(),
                        key: Text::new(emoji::from_name(&name)),
                        removed,
                    },
                );
                self.emitter.emit(event).await.map(|_| ())
            }
        }
    }

    /// The room and id of a post the bridge carries: in a room, not ours, not a system post.
    fn place(&self, post: &Value, me: &str) -> Option<(RoomId, String)> {
        let room = s(post, "channel_id").and_then(|c| self.dir.room_of(c))?;
        let id = s(post, "id").filter(|i| valid_id(i))?.to_owned();
        if s(post, "user_id") == Some(me)
            || s(post, "type").is_some_and(|t| t.starts_with("system_"))
        {
            return None;
        }
        Some((room, id))
    }

    async fn seen(&self, channel: &str, at: u64) {
        let key = seen_key(channel);
        let newer = match self.state.get_text(&key).await {
            Ok(Some(old)) => old.parse::<u64>().map_or(true, |o| at > o),
            _ => true,
        };
        if newer && let Err(e) = self.state.put(&key, at.to_string().into_bytes()).await {
            tracing::warn!(error = %e, "could not keep the last Mattermost post seen");
        }
    }

    async fn sender(&self, post: &Value) -> Sender {
        let user = s(post, "user_id").unwrap_or("mattermost");
        let mut sender = Sender::new(user.to_owned());
        let props = post.get("props");
        let override_name = props
            .and_then(|p| s(p, "override_username"))
            .filter(|_| props.and_then(|p| s(p, "from_webhook")) == Some("true"));
        sender.display_name = match override_name {
            Some(n) => Some(n.chars().filter(|c| !c.is_control()).take(80).collect()),
            None => self.dir.person(&self.api, user).await,
        };
        sender
    }

    fn content(&self, post: &Value, action: bool) -> Content {
        let mut content = content_of(s(post, "message").unwrap_or(""), action);
        let infos = post.pointer("/metadata/files").and_then(Value::as_array);
        for f in infos.into_iter().flatten().take(10) {
            let Some(id) = s(f, "id").filter(|i| valid_id(i)) else {
                continue;
            };
            let name: String = s(f, "name").unwrap_or("file").chars().take(200).collect();
            let link = self.links.as_ref().and_then(|l| l.link(id, &name));
            content.add_file(
                link,
                name,
                s(f, "mime_type").map(str::to_owned),
                f.get("size").and_then(Value::as_u64),
            );
        }
        content
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_are_read_field_by_field() {
        let post = json!({"id": "p".repeat(26), "channel_id": "c".repeat(26), "user_id": "u".repeat(26), "message": "hi"});
        let f = json!({"event": "posted", "data": {"post": post.to_string()}, "broadcast": {}, "seq": 7}).to_string();
        assert_eq!(frame(&f), Some((Some(7), Some(Incoming::Post(post)))));
        let r = json!({"event": "reaction_added", "data": {"reaction": json!({"user_id": "u".repeat(26), "post_id": "p".repeat(26), "emoji_name": "+1"}).to_string()}, "seq": 8}).to_string();
        assert!(matches!(
            frame(&r),
            Some((Some(8), Some(Incoming::Reaction { removed: false, .. })))
        ));
        assert_eq!(
            frame(r#"{"event":"typing","seq":9}"#),
            Some((Some(9), None))
        );
        assert_eq!(
            frame(r#"{"event":"posted","data":{"post":"not json"},"seq":10}"#),
            Some((Some(10), None))
        );
        assert_eq!(frame(r#"{"status":"OK","seq_reply":1}"#), None);
        assert_eq!(frame("[]"), None);
    }

    #[test]
    fn names_prefer_the_nickname_then_the_full_name() {
        assert_eq!(
            name_of(&json!({"username": "ann", "nickname": "Annie"})).as_deref(),
            Some("Annie")
        );
        assert_eq!(
            name_of(&json!({"username": "ann", "first_name": "Ann", "last_name": "Lee"}))
                .as_deref(),
            Some("Ann Lee")
        );
        assert_eq!(
            name_of(&json!({"username": "ann", "nickname": " "})).as_deref(),
            Some("ann")
        );
        let c = content_of("**bold** and *it*", true);
        assert_eq!(c.kind, MessageKind::Emote);
        assert_eq!(
            c.formatted,
            Some(Formatted::Html(Text::new("<b>bold</b> and <i>it</i>")))
        );
    }
}
