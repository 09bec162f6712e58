//! What the bridge knows of the workspace: who it is, the rooms' conversations, people's names
//! (looked up once with `users.info`, then cached) and channels' names.

use crate::api::{Api, Tier};
use crate::config::{Room, room};
use passerelle_sdk::RoomId;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::RwLock;

/// The most people and channels cached (a workspace of more still works; names are looked up
/// again).
const MAX_CACHED: usize = 50_000;

/// A person as shown.
#[derive(Clone, Debug)]
pub struct Person {
    /// Display name, else real name, else username.
    pub name: String,
    /// Their avatar (`profile.image_72`).
    pub avatar: Option<String>,
    /// A bot user.
    pub bot: bool,
}

/// Who the bridge is on Slack (`auth.test`).
#[derive(Clone, Debug, Default)]
pub struct Me {
    /// The bot user's id (`U…`).
    pub user: String,
    /// The bot's id (`B…`): what its own messages carry as `bot_id`.
    pub bot: String,
    /// The workspace (`T…`).
    pub team: String,
}

/// The directory.
#[derive(Default)]
pub struct Directory {
    me: RwLock<Me>,
    /// Conversation id → the room it is.
    rooms: RwLock<HashMap<String, RoomId>>,
    /// Room → conversation id, for sending.
    conversations: RwLock<HashMap<RoomId, String>>,
    people: RwLock<HashMap<String, Person>>,
    channel_names: RwLock<HashMap<String, String>>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// A person's shown name from a `users.info` user object.
pub fn person_of(user: &Value) -> Option<Person> {
    let profile = user.get("profile");
    let pick = |k: &str| {
        profile
            .and_then(|p| p.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    };
    let name = pick("display_name")
        .or_else(|| pick("real_name"))
        .or_else(|| user.get("name").and_then(Value::as_str))?;
    let avatar = pick("image_72")
        .filter(|u| u.starts_with("https://") && u.len() <= 1024)
        .map(str::to_owned);
    Some(Person {
        name: name.chars().filter(|c| !c.is_control()).take(80).collect(),
        avatar,
        bot: user.get("is_bot").and_then(Value::as_bool).unwrap_or(false),
    })
}

impl Directory {
    /// Who we are.
    pub fn me(&self) -> Me {
        read(&self.me).clone()
    }

    /// Sets who we are.
    pub fn set_me(&self, me: Me) {
        *write(&self.me) = me;
    }

    /// The room a conversation is, if it is one.
    pub fn room_of(&self, conversation: &str) -> Option<RoomId> {
        read(&self.rooms).get(conversation).cloned()
    }

    /// The conversation a room sends to, once known.
    pub fn conversation_of(&self, room: &RoomId) -> Option<String> {
        read(&self.conversations).get(room).cloned()
    }

    /// Every room's conversation.
    pub fn conversations(&self) -> Vec<(RoomId, String)> {
        read(&self.conversations)
            .iter()
            .map(|(r, c)| (r.clone(), c.clone()))
            .collect()
    }

    fn bind(&self, room: &RoomId, conversation: &str) {
        write(&self.rooms).insert(conversation.to_owned(), room.clone());
        write(&self.conversations).insert(room.clone(), conversation.to_owned());
    }

    /// Finds every room's conversation: ids as they are, `#name` in `conversations.list`
    /// (public and private channels the bot can see; a name found twice is refused), `@U…` by
    /// `conversations.open`. A room that can't be found is logged by name and left out.
    pub async fn resolve(&self, api: &Api, rooms: &[RoomId]) -> Result<(), crate::api::ApiError> {
        let mut names: HashMap<String, Vec<RoomId>> = HashMap::new();
        for r in rooms {
            match room(r.as_str()) {
                Some(Room::Conversation(c)) => self.bind(r, &c),
                Some(Room::Named(n)) => names.entry(n).or_default().push(r.clone()),
                Some(Room::Direct(user)) => {
                    match api
                        .call(
                            "conversations.open",
                            &serde_json::json!({"users": user}),
                            Tier::T3,
                        )
                        .await
                    {
                        Ok(v) => match v.pointer("/channel/id").and_then(Value::as_str) {
                            Some(c) => self.bind(r, c),
                            None => tracing::warn!(room = %r, "conversations.open gave no channel"),
                        },
                        Err(e) if e.is_auth() => return Err(e),
                        Err(e) => {
                            tracing::warn!(room = %r, error = %e, "no direct messages with this person")
                        }
                    }
                }
                None => {}
            }
        }
        if names.is_empty() {
            return Ok(());
        }
        let mut found: HashMap<String, Vec<String>> = HashMap::new();
        let mut cursor = String::new();
        for _ in 0..50 {
            let mut params = vec![
                ("types", "public_channel,private_channel".to_owned()),
                ("exclude_archived", "true".to_owned()),
                ("limit", "200".to_owned()),
            ];
            if !cursor.is_empty() {
                params.push(("cursor", cursor.clone()));
            }
            let page = api.get("conversations.list", &params, Tier::T2).await?;
            for c in page
                .get("channels")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let (Some(id), Some(name)) = (
                    c.get("id").and_then(Value::as_str),
                    c.get("name").and_then(Value::as_str),
                ) {
                    self.note_channel(id, name);
                    found
                        .entry(name.to_lowercase())
                        .or_default()
                        .push(id.to_owned());
                }
            }
            cursor = page
                .pointer("/response_metadata/next_cursor")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if cursor.is_empty() {
                break;
            }
        }
        for (name, rooms) in names {
            match found.get(&name).map(Vec::as_slice) {
                Some([one]) => rooms.iter().for_each(|r| self.bind(r, one)),
                Some(_) => {
                    tracing::warn!(channel = %name, "two channels have this name: give the room as its id")
                }
                None => {
                    tracing::warn!(channel = %name, "no channel of this name that the bot can see: invite the bot, or give the room as its id")
                }
            }
        }
        Ok(())
    }

    /// Remembers a channel's name.
    pub fn note_channel(&self, id: &str, name: &str) {
        let mut names = write(&self.channel_names);
        if names.len() < MAX_CACHED {
            names.insert(id.to_owned(), name.chars().take(80).collect());
        }
    }

    /// A channel's name, if known.
    pub fn channel_name(&self, id: &str) -> Option<String> {
        read(&self.channel_names).get(id).cloned()
    }

    /// A person, from the cache or `users.info` (once).
    pub async fn person(&self, api: &Api, user: &str) -> Option<Person> {
        if let Some(p) = read(&self.people).get(user) {
            return Some(p.clone());
        }
        let v = api
            .get("users.info", &[("user", user.to_owned())], Tier::T4)
            .await
            .ok()?;
        let p = person_of(v.get("user")?)?;
        let mut people = write(&self.people);
        if people.len() < MAX_CACHED {
            people.insert(user.to_owned(), p.clone());
        }
        Some(p)
    }

    /// Forgets a person (their profile changed).
    pub fn forget_person(&self, user: &str) {
        write(&self.people).remove(user);
    }
}
