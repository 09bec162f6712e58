//! The degrade rules, in one place: how an event is adapted to a destination that lacks a
//! capability or a right.
//!
//! - No per-message identity: the sender's name is put before the text (`remote_nick_format`).
//! - No replies: the reply becomes a quote line, `(re alice) text`.
//! - No threads: a thread message becomes a reply to the thread's root (then, without replies, a
//!   quote).
//! - No edits (or no `delete` right): the new text is resent with ` (edited)` appended, or dropped
//!   (`general.edit_fallback`).
//! - No deletes, no reactions: said as an action without any message text (`* alice reacted 👍 to
//!   bob's message`, `* alice deleted a message`), or dropped and counted
//!   (`general.reaction_fallback`, `general.delete_fallback`). Saying it needs only `write`; where
//!   the network could react or delete but the account lacks `delete`, they are dropped.
//! - No rich text: the formatted body is dropped, the plain text stays. No attachments: their
//!   links are appended to the text.
//! - Longer than the destination's limit: cut at a character boundary, marked with `…`.

use super::{AccountPolicy, RoutedEvent};
use crate::config::{EditFallback, General, TextFallback};
use passerelle_sdk::{Content, Event, EventKind, Formatted, MessageKind, RemoteMessageId, Text};

/// The destination's ids for the event's relations, looked up in the message map.
#[derive(Clone, Debug, Default)]
pub struct DestRelations {
    /// The replied-to message's id on the destination.
    pub reply_to: Option<RemoteMessageId>,
    /// The replied-to message's sender, for quotes.
    pub reply_sender: Option<String>,
    /// The thread root's id on the destination.
    pub thread_root: Option<RemoteMessageId>,
    /// The thread root's sender, for quotes.
    pub thread_sender: Option<String>,
    /// The edited/deleted/reacted-to message's id on the destination.
    pub target: Option<RemoteMessageId>,
    /// The edited/deleted/reacted-to message's sender, for text fallbacks.
    pub target_sender: Option<String>,
}

/// Whether a destination with `caps` can carry an event of this kind in any form. Membership,
/// topics and typing have no fallback, so the router does not queue them where they can't go.
pub fn carried(kind: &EventKind, caps: &passerelle_sdk::Capabilities) -> bool {
    match kind {
        EventKind::Membership(_) => caps.membership,
        EventKind::Topic(_) => caps.topic,
        EventKind::Typing(_) => caps.typing,
        _ => true,
    }
}

/// Whether [`carried`] can be false for this kind on some network. When it can't (messages,
/// edits, replies, reactions, deletes: they all have a fallback), the router skips the
/// destinations' capabilities altogether.
pub fn depends_on_capabilities(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Membership(_) | EventKind::Topic(_) | EventKind::Typing(_)
    )
}

/// Adapts `routed` for a destination room. `Err` is a content-free drop reason.
pub fn adapt(
    routed: &RoutedEvent,
    dest_room: &passerelle_sdk::RoomId,
    dest: &AccountPolicy,
    rel: DestRelations,
    general: &General,
) -> Result<Event, &'static str> {
    let caps = dest.capabilities;
    let origin = &routed.event;
    let mut out = Event {
        key: origin.key,
        room: dest_room.clone(),
        sender: origin.sender.clone(),
        at: origin.at,
        remote_id: None,
        reply_to: None,
        thread_root: None,
        kind: EventKind::Typing(false),
    };

    // Relations: keep what the destination can carry, quote the rest.
    let mut quote: Option<String> = None;
    if routed.thread_root.is_some() {
        if caps.threads && rel.thread_root.is_some() {
            out.thread_root = rel.thread_root.clone();
        } else if routed.reply_to.is_none() {
            if caps.replies && rel.thread_root.is_some() {
                out.reply_to = rel.thread_root.clone();
            } else if let Some(name) = &rel.thread_sender {
                quote = Some(name.clone());
            }
        }
    }
    if routed.reply_to.is_some() {
        if caps.replies && rel.reply_to.is_some() {
            out.reply_to = rel.reply_to.clone();
        } else if let Some(name) = &rel.reply_sender {
            quote = Some(name.clone());
        }
    }

    let modifies_allowed = dest.rights.delete;
    out.kind = match &origin.kind {
        EventKind::Message(content) => EventKind::Message(shape(
            content,
            routed,
            dest,
            quote.as_deref(),
            general,
            None,
        )),
        EventKind::Edit { content, .. } => {
            if caps.edits
                && modifies_allowed
                && let Some(target) = rel.target
            {
                EventKind::Edit {
                    target,
                    content: shape(content, routed, dest, None, general, None),
                }
            } else {
                match general.edit_fallback {
                    EditFallback::Resend => EventKind::Message(shape(
                        content,
                        routed,
                        dest,
                        quote.as_deref(),
                        general,
                        Some(" (edited)"),
                    )),
                    EditFallback::Drop => return Err("no_edits"),
                }
            }
        }
        EventKind::Delete { .. } => match rel.target {
            Some(target) if caps.deletes && modifies_allowed => EventKind::Delete { target },
            // Said in words where the network can't delete: the message is known to the core,
            // even when the destination gave it no id (IRC).
            _ if !caps.deletes
                && routed.target.is_some()
                && general.delete_fallback == TextFallback::Text =>
            {
                let mut text = "deleted a message".to_owned();
                if let Some(owner) = rel
                    .target_sender
                    .as_deref()
                    .filter(|o| *o != origin.sender.name())
                {
                    text.push_str(&format!(" by {owner}"));
                }
                EventKind::Message(shape(
                    &Content::emote(text),
                    routed,
                    dest,
                    None,
                    general,
                    None,
                ))
            }
            Some(_) => return Err("no_deletes"),
            None if !caps.deletes || !modifies_allowed => return Err("no_deletes"),
            None => return Err("unknown_target"),
        },
        EventKind::Reaction { key, removed, .. } => match rel.target {
            Some(target) if caps.reactions && modifies_allowed => EventKind::Reaction {
                target,
                key: key.clone(),
                removed: *removed,
            },
            _ if !caps.reactions
                && !*removed
                && routed.target.is_some()
                && general.reaction_fallback == TextFallback::Text =>
            {
                let text = match rel.target_sender.as_deref() {
                    Some(owner) => format!("reacted {} to {owner}'s message", key.as_str()),
                    None => format!("reacted {}", key.as_str()),
                };
                EventKind::Message(shape(
                    &Content::emote(text),
                    routed,
                    dest,
                    None,
                    general,
                    None,
                ))
            }
            Some(_) => return Err("no_reactions"),
            None if !caps.reactions || !modifies_allowed => return Err("no_reactions"),
            None => return Err("unknown_target"),
        },
        EventKind::Membership(change) if caps.membership => EventKind::Membership(*change),
        EventKind::Topic(topic) if caps.topic => EventKind::Topic(topic.clone()),
        EventKind::Typing(on) if caps.typing => EventKind::Typing(*on),
        _ => return Err("not_carried"),
    };
    Ok(out)
}

/// Applies identity, quote, rich-text, attachment and length rules to one message body.
fn shape(
    content: &Content,
    routed: &RoutedEvent,
    dest: &AccountPolicy,
    quote: Option<&str>,
    general: &General,
    suffix: Option<&str>,
) -> Content {
    let caps = dest.capabilities;
    let mut body = String::with_capacity(content.text.len() + 32);
    if let Some(name) = quote {
        body.push_str("(re ");
        body.push_str(name);
        body.push_str(") ");
    }
    body.push_str(content.text.as_str());
    if !caps.attachments {
        for a in &content.attachments {
            if !body.is_empty() {
                body.push('\n');
            }
            if a.url.is_empty() {
                // A file the origin does not share (an encrypted Matrix file): its name only.
                body.push('[');
                body.push_str(a.name.as_str());
                body.push(']');
            } else {
                body.push_str(a.name.as_str());
                body.push_str(": ");
                body.push_str(a.url.as_str());
            }
        }
    }
    if let Some(s) = suffix {
        body.push_str(s);
    }
    let kind = content.kind;
    let prefix = if caps.per_message_identity {
        String::new()
    } else {
        let name = routed.event.sender.name();
        if kind == MessageKind::Emote {
            // An action keeps its kind; the name it continues is the original sender's.
            format!("{name} ")
        } else {
            let format = dest
                .remote_nick_format
                .as_deref()
                .unwrap_or(&general.remote_nick_format);
            format
                .replace("{nick}", name)
                .replace("{account}", routed.origin.as_str())
        }
    };
    let mut text = prefix.clone();
    text.push_str(&body);
    if let Some(max) = dest.limits.max_text_bytes {
        text = truncate(text, max);
    }
    let formatted = if caps.rich_text && quote.is_none() && suffix.is_none() {
        content.formatted.as_ref().map(|f| match f {
            Formatted::Html(html) => Formatted::Html(Text::new(format!(
                "{}{}",
                escape_html(&prefix),
                html.as_str()
            ))),
            Formatted::Markdown(md) => {
                Formatted::Markdown(Text::new(format!("{prefix}{}", md.as_str())))
            }
            other => other.clone(),
        })
    } else {
        None
    };
    Content {
        text: Text::new(text),
        formatted,
        kind,
        attachments: if caps.attachments {
            content.attachments.clone()
        } else {
            Vec::new()
        },
    }
}

fn truncate(mut text: String, max: usize) -> String {
    const MARK: &str = "…";
    if text.len() <= max || max < MARK.len() {
        return text;
    }
    let mut cut = max - MARK.len();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(MARK);
    text
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rights;
    use passerelle_sdk::{Capabilities, EventKey, Limits, Sender};

    fn policy(caps: Capabilities, delete: bool) -> AccountPolicy {
        AccountPolicy {
            enabled: true,
            rights: Rights {
                read: true,
                write: true,
                delete,
            },
            capabilities: caps,
            limits: Limits::default(),
            remote_nick_format: None,
        }
    }

    fn routed(kind: EventKind) -> RoutedEvent {
        let mut sender = Sender::new("u1");
        sender.display_name = Some("alice".into());
        RoutedEvent {
            event: Event::new("#a", sender, kind),
            origin: "chat.one".into(),
            link: "l".into(),
            reply_to: None,
            thread_root: None,
            target: None,
        }
    }

    fn text_of(e: &Event) -> &str {
        e.content().map(|c| c.text.as_str()).unwrap_or("")
    }

    #[test]
    fn names_are_prefixed_only_without_per_message_identity() {
        let r = routed(EventKind::Message(Content::plain("hi")));
        let g = General::default();
        let plain = adapt(
            &r,
            &"#b".into(),
            &policy(Capabilities::default(), false),
            DestRelations::default(),
            &g,
        )
        .unwrap();
        assert_eq!(text_of(&plain), "<alice> hi");
        let caps = Capabilities {
            per_message_identity: true,
            ..Default::default()
        };
        let api = adapt(
            &r,
            &"x".into(),
            &policy(caps, false),
            DestRelations::default(),
            &g,
        )
        .unwrap();
        assert_eq!(text_of(&api), "hi");
        let emote = routed(EventKind::Message(Content::emote("waves")));
        let out = adapt(
            &emote,
            &"#b".into(),
            &policy(Capabilities::default(), false),
            DestRelations::default(),
            &g,
        )
        .unwrap();
        assert_eq!(text_of(&out), "alice waves");
        assert_eq!(out.content().unwrap().kind, MessageKind::Emote);
    }

    #[test]
    fn replies_become_quotes_where_not_carried() {
        let mut r = routed(EventKind::Message(Content::plain("yes")));
        r.reply_to = Some(EventKey::new());
        let rel = DestRelations {
            reply_to: Some("m9".into()),
            reply_sender: Some("bob".into()),
            ..Default::default()
        };
        let g = General::default();
        let out = adapt(
            &r,
            &"#b".into(),
            &policy(Capabilities::default(), false),
            rel.clone(),
            &g,
        )
        .unwrap();
        assert_eq!(text_of(&out), "<alice> (re bob) yes");
        assert_eq!(out.reply_to, None);
        let caps = Capabilities {
            replies: true,
            per_message_identity: true,
            ..Default::default()
        };
        let out = adapt(&r, &"x".into(), &policy(caps, false), rel, &g).unwrap();
        assert_eq!(out.reply_to, Some("m9".into()));
        assert_eq!(text_of(&out), "yes");
    }

    #[test]
    fn edits_deletes_and_reactions_need_the_capability_and_the_delete_right() {
        let g = General::default();
        let caps = Capabilities {
            edits: true,
            deletes: true,
            reactions: true,
            per_message_identity: true,
            ..Default::default()
        };
        let rel = DestRelations {
            target: Some("m1".into()),
            ..Default::default()
        };
        let edit = routed(EventKind::Edit {
            target: "o1".into(),
            content: Content::plain("fixed"),
        });
        let out = adapt(&edit, &"x".into(), &policy(caps, true), rel.clone(), &g).unwrap();
        assert!(matches!(out.kind, EventKind::Edit { ref target, .. } if target.as_str() == "m1"));
        // Without the delete right, the edit is resent as a correction.
        let out = adapt(&edit, &"x".into(), &policy(caps, false), rel.clone(), &g).unwrap();
        assert_eq!(text_of(&out), "fixed (edited)");
        assert!(matches!(out.kind, EventKind::Message(_)));
        let drop = General {
            edit_fallback: EditFallback::Drop,
            ..General::default()
        };
        assert_eq!(
            adapt(&edit, &"x".into(), &policy(caps, false), rel.clone(), &drop).unwrap_err(),
            "no_edits"
        );
        let delete = routed(EventKind::Delete {
            target: "o1".into(),
        });
        assert!(adapt(&delete, &"x".into(), &policy(caps, true), rel.clone(), &g).is_ok());
        assert_eq!(
            adapt(&delete, &"x".into(), &policy(caps, false), rel.clone(), &g).unwrap_err(),
            "no_deletes"
        );
        assert_eq!(
            adapt(
                &delete,
                &"x".into(),
                &policy(caps, true),
                DestRelations::default(),
                &g
            )
            .unwrap_err(),
            "unknown_target"
        );
        let reaction = routed(EventKind::Reaction {
            target: "o1".into(),
            key: "👍".into(),
            removed: false,
        });
        let quiet = General {
            reaction_fallback: TextFallback::Drop,
            delete_fallback: TextFallback::Drop,
            ..General::default()
        };
        assert_eq!(
            adapt(
                &reaction,
                &"#b".into(),
                &policy(Capabilities::default(), true),
                rel.clone(),
                &quiet
            )
            .unwrap_err(),
            "no_reactions"
        );
        let plain = Capabilities::default();
        let mut reaction = reaction;
        reaction.target = Some(EventKey::new());
        let mut delete = delete;
        delete.target = Some(EventKey::new());
        let rel = DestRelations {
            target_sender: Some("bob".into()),
            ..rel
        };
        let out = adapt(
            &reaction,
            &"#b".into(),
            &policy(plain, true),
            rel.clone(),
            &g,
        )
        .unwrap();
        assert_eq!(text_of(&out), "alice reacted 👍 to bob's message");
        assert_eq!(out.content().map(|c| c.kind), Some(MessageKind::Emote));
        let out = adapt(&delete, &"#b".into(), &policy(plain, true), rel.clone(), &g).unwrap();
        assert_eq!(text_of(&out), "alice deleted a message by bob");
        assert_eq!(
            adapt(
                &delete,
                &"#b".into(),
                &policy(plain, true),
                rel.clone(),
                &quiet
            )
            .unwrap_err(),
            "no_deletes"
        );
        // Saying it is a plain write: the delete right is not needed where nothing is modified.
        assert!(
            adapt(
                &reaction,
                &"#b".into(),
                &policy(plain, false),
                rel.clone(),
                &g
            )
            .is_ok()
        );
        // Where the network could react but the right is missing, nothing is said.
        assert_eq!(
            adapt(
                &reaction,
                &"#b".into(),
                &policy(caps, false),
                rel.clone(),
                &g
            )
            .unwrap_err(),
            "no_reactions"
        );
        let unreact = routed(EventKind::Reaction {
            target: "o1".into(),
            key: "👍".into(),
            removed: true,
        });
        assert_eq!(
            adapt(&unreact, &"#b".into(), &policy(plain, true), rel, &g).unwrap_err(),
            "no_reactions"
        );
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let cut = truncate("ééééé".to_owned(), 7);
        assert_eq!(cut, "éé…");
        assert!(cut.len() <= 7);
        assert_eq!(truncate("short".to_owned(), 10), "short");
    }
}
