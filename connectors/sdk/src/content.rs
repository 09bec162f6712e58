//! Message content. Text is wrapped in [`Text`], whose `Debug` and `Display` print only its length,
//! so that content cannot reach a log line by accident.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A piece of message content (a body, a topic, an attachment name). Printing it with `{}` or `{:?}`
/// shows only its size; [`Text::as_str`] is the one deliberate way to read it.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Text(String);

impl Text {
    /// Wraps a string.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The text itself. Never pass this to a log macro.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Unwraps the string.
    pub fn into_string(self) -> String {
        self.0
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Text(len={})", self.0.len())
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl From<&str> for Text {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl From<String> for Text {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// How a message is meant: said, acted (`/me`), or a notice from a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageKind {
    /// An ordinary message.
    #[default]
    Normal,
    /// An action, IRC's `/me` or Matrix's `m.emote`: the text continues the sender's name.
    Emote,
    /// A notice (IRC NOTICE, Matrix `m.notice`): service output, never answered by bots.
    Notice,
}

/// A rich-text form of the body, in the subset the core understands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "format", content = "body")]
#[non_exhaustive]
pub enum Formatted {
    /// A safe HTML subset: `b i u s code pre a blockquote br p ul ol li`.
    Html(Text),
    /// CommonMark.
    Markdown(Text),
}

/// A file that travels with a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file's name; content, so it never prints.
    pub name: Text,
    /// MIME type, when known.
    pub mime: Option<String>,
    /// Size in bytes, when known.
    pub size: Option<u64>,
    /// Where the destination can fetch the file; content, so it never prints.
    pub url: Text,
}

/// What a message says. Read from JSON, a missing field is its default (no formatting, a normal
/// message, no attachments).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Content {
    /// The plain-text body; always present, the fallback every network can show.
    pub text: Text,
    /// A rich form of the same body, when the origin had one.
    pub formatted: Option<Formatted>,
    /// Normal, emote or notice.
    pub kind: MessageKind,
    /// Files sent with the message.
    pub attachments: Vec<Attachment>,
}

/// Splits `text` for a network that limits one message: pieces of at most `max_chars`
/// characters and `max_bytes` bytes, cut at the last space before the limit when there is one in
/// its second half (the space stays with the first piece). Joined, the pieces are `text`.
pub fn split_text(text: &str, max_chars: usize, max_bytes: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = 0;
        for (n, (i, c)) in rest.char_indices().enumerate() {
            if n >= max_chars || i + c.len_utf8() > max_bytes {
                break;
            }
            end = i + c.len_utf8();
        }
        if end == rest.len() {
            pieces.push(rest.to_owned());
            break;
        }
        if end == 0 {
            // A limit smaller than one character: take the character anyway.
            end = rest
                .chars()
                .next()
                .map(char::len_utf8)
                .unwrap_or(rest.len());
        }
        let cut = match rest[..end].rfind(' ') {
            Some(space) if space >= end / 2 => space + 1,
            _ => end,
        };
        pieces.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    pieces
}

impl Content {
    /// Adds a file: as an attachment when there is a `link` other networks can fetch, else as
    /// `[name]` at the end of the text, so the file is at least named.
    pub fn add_file(
        &mut self,
        link: Option<String>,
        name: String,
        mime: Option<String>,
        size: Option<u64>,
    ) {
        match link {
            Some(url) => self.attachments.push(Attachment {
                name: Text::new(name),
                mime,
                size,
                url: Text::new(url),
            }),
            None => {
                let mut text = std::mem::take(&mut self.text).into_string();
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push('[');
                text.push_str(&name);
                text.push(']');
                self.text = Text::new(text);
            }
        }
    }

    /// A plain-text message.
    pub fn plain(text: impl Into<String>) -> Self {
        Self {
            text: Text::new(text),
            ..Self::default()
        }
    }
    /// An action (`/me`).
    pub fn emote(text: impl Into<String>) -> Self {
        Self {
            text: Text::new(text),
            kind: MessageKind::Emote,
            ..Self::default()
        }
    }
}

/// `text` escaped for HTML, as element text or an attribute value: `&`, `<`, `>`, `"` and `'`
/// become entities.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_keeps_every_character_and_respects_both_limits() {
        let text = "aé語🦀 ".repeat(300);
        for (chars, bytes) in [
            (4096, usize::MAX),
            (100, usize::MAX),
            (usize::MAX, 1000),
            (7, 9),
        ] {
            let pieces = split_text(&text, chars, bytes);
            assert_eq!(pieces.concat(), text);
            for p in &pieces {
                assert!(
                    p.chars().count() <= chars && p.len() <= bytes,
                    "{chars}/{bytes}"
                );
            }
        }
        assert_eq!(split_text("short", 10, 10), vec!["short"]);
        assert_eq!(
            split_text("one two three", 8, 100),
            vec!["one two ", "three"]
        );
        assert!(split_text("", 10, 10).is_empty());
    }

    #[test]
    fn text_never_prints_its_content() {
        let t = Text::new("canary-secret-words");
        let content = Content::plain("canary-secret-words");
        for printed in [
            format!("{t}"),
            format!("{t:?}"),
            format!("{content:?}"),
            format!("{content:#?}"),
        ] {
            assert!(!printed.contains("canary"), "printed: {printed}");
        }
        assert_eq!(format!("{t}"), "<19 bytes>");
        assert_eq!(t.as_str(), "canary-secret-words");
    }
}
