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
    adapt_with(routed, dest_room, dest, rel, general, None).map(|a| a.event)
}

/// An event adapted for its destination.
#[derive(Debug)]
pub struct Adapted {
    /// The event to send.
    pub event: Event,
    /// Whether its text was cut to the destination's `max_lines` (a paste link, if one was
    /// given, says where the whole text is).
    pub cut: bool,
}

/// [`adapt`], with `paste`: where the whole text can be read when it is cut to the
/// destination's lines (the lane stores it when a first `adapt_with` said `cut`).
pub fn adapt_with(
    routed: &RoutedEvent,
    dest_room: &passerelle_sdk::RoomId,
    dest: &AccountPolicy,
    rel: DestRelations,
    general: &General,
    paste: Option<&str>,
) -> Result<Adapted, &'static str> {
    let cut = std::cell::Cell::new(false);
    let general = &Shaping {
        general,
        paste,
        cut: &cut,
    };
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
        // A moderator's deletion is applied (or said) only where the account may delete.
        EventKind::Delete { .. } if routed.moderation && !modifies_allowed => {
            return Err("no_delete_right");
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
    Ok(Adapted {
        event: out,
        cut: cut.get(),
    })
}

/// What shaping a body reads besides the event: `[general]`, the paste link, and where it notes
/// that the text was cut.
struct Shaping<'a> {
    general: &'a General,
    paste: Option<&'a str>,
    cut: &'a std::cell::Cell<bool>,
}

impl std::ops::Deref for Shaping<'_> {
    type Target = General;
    fn deref(&self) -> &General {
        self.general
    }
}

/// Applies identity, quote, rich-text, attachment and length rules to one message body.
fn shape(
    content: &Content,
    routed: &RoutedEvent,
    dest: &AccountPolicy,
    quote: Option<&str>,
    general: &Shaping<'_>,
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
            fill_nick_format(format, name, routed.origin.as_str(), &routed.link)
        }
    };
    let mut text = match dest.limits.max_lines {
        Some(max_lines) => {
            let line_bytes = dest.limits.line_bytes.unwrap_or(usize::MAX);
            let fitted = fit_lines(&prefix, &body, max_lines, line_bytes, general.paste);
            if fitted.cut {
                general.cut.set(true);
            }
            fitted.text
        }
        None => {
            let mut text = prefix.clone();
            text.push_str(&body);
            text
        }
    };
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

/// A body fitted to a destination whose lines are messages of their own.
struct Fitted {
    text: String,
    cut: bool,
}

/// Puts `prefix` before every line of `body` (empty lines are left out: they would be sent as
/// nothing) and keeps at most `max_lines` lines, a line longer than `line_bytes` counting as
/// the lines it will be wrapped into. When lines are left out, or the last one is cut short, a
/// last line says so: `… (1,995 more lines)`, with `paste` (the whole text's link) when given.
fn fit_lines(
    prefix: &str,
    body: &str,
    max_lines: usize,
    line_bytes: usize,
    paste: Option<&str>,
) -> Fitted {
    let lines: Vec<&str> = body
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return Fitted {
            text: format!("{prefix}{body}"),
            cut: false,
        };
    }
    let line_bytes = line_bytes.max(1);
    let cost = |len: usize| (prefix.len() + len).div_ceil(line_bytes).max(1);
    let mut text = String::with_capacity(body.len().min(max_lines * line_bytes) + 64);
    let mut used = 0;
    let mut shown = 0;
    let mut shortened = false;
    for line in &lines {
        let c = cost(line.len());
        if used + c > max_lines {
            let room = (max_lines - used) * line_bytes;
            if room > prefix.len() + 16 {
                // Part of this line still fits: cut it at a character boundary.
                let mut end = room - prefix.len() - "…".len();
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                push_line(&mut text, prefix, &line[..end]);
                text.push('…');
                shown += 1;
                shortened = true;
            }
            break;
        }
        push_line(&mut text, prefix, line);
        used += c;
        shown += 1;
    }
    let hidden = lines.len() - shown;
    if hidden == 0 && !shortened {
        return Fitted { text, cut: false };
    }
    let note = match (hidden, paste) {
        (0, Some(link)) => format!("… (the whole text: {link})"),
        (0, None) => return Fitted { text, cut: true },
        (n, link) => {
            let lines = if n == 1 { "line" } else { "lines" };
            match link {
                Some(link) => format!("… ({} more {lines}: {link})", thousands(n)),
                None => format!("… ({} more {lines})", thousands(n)),
            }
        }
    };
    push_line(&mut text, prefix, &note);
    Fitted { text, cut: true }
}

fn push_line(text: &mut String, prefix: &str, line: &str) {
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(prefix);
    text.push_str(line);
}

/// `1995` as `1,995`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
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

/// `name` with a zero-width space after its first character, so that an IRC client does not
/// take the bridged name for a mention of that person (matterbridge's `{NOPINGNICK}`).
fn no_ping(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => format!("{first}\u{200b}{}", chars.as_str()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests;

/// `remote_nick_format` with its placeholders filled in one pass, so a name that itself contains
/// `{link}` or `{account}` stays as written. An unknown `{…}` stays as it is.
fn fill_nick_format(format: &str, nick: &str, account: &str, link: &str) -> String {
    let mut out = String::with_capacity(format.len() + nick.len());
    let mut rest = format;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let value = ["{nopingnick}", "{nick}", "{account}", "{link}"]
            .into_iter()
            .find(|p| after.starts_with(p));
        match value {
            Some(p) => {
                match p {
                    "{nopingnick}" => out.push_str(&no_ping(nick)),
                    "{nick}" => out.push_str(nick),
                    "{account}" => out.push_str(account),
                    _ => out.push_str(link),
                }
                rest = &after[p.len()..];
            }
            None => {
                out.push('{');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
