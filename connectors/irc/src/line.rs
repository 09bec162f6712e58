//! IRC message lines (RFC 1459 framing with IRCv3 message tags): parsing what the server sends and
//! building what we send. A line that does not parse is an error the caller logs and skips.

use std::fmt::Write as _;

/// The longest line we accept from a server: 8191 bytes of tags plus the 512-byte message.
pub const MAX_INBOUND_LINE: usize = 8191 + 512;

/// Where a message came from: `nick!user@host` or a server name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// The nick, or the server name.
    pub nick: String,
    /// The user part, when present.
    pub user: Option<String>,
    /// The host part, when present.
    pub host: Option<String>,
}

impl Prefix {
    fn parse(raw: &str) -> Self {
        let (rest, host) = match raw.split_once('@') {
            Some((r, h)) => (r, Some(h.to_owned())),
            None => (raw, None),
        };
        let (nick, user) = match rest.split_once('!') {
            Some((n, u)) => (n.to_owned(), Some(u.to_owned())),
            None => (rest.to_owned(), None),
        };
        Self { nick, user, host }
    }

    /// Whether this is a user (`nick!user@host`) rather than a server.
    pub fn is_user(&self) -> bool {
        self.user.is_some() || self.host.is_some()
    }
}

/// One parsed line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// IRCv3 tags, unescaped.
    pub tags: Vec<(String, Option<String>)>,
    /// The source.
    pub prefix: Option<Prefix>,
    /// The command, upper-cased (numerics stay digits).
    pub command: String,
    /// The parameters, the trailing one included.
    pub params: Vec<String>,
}

/// Why a line could not be parsed. Carries no line content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but whitespace.
    #[error("empty line")]
    Empty,
    /// Longer than [`MAX_INBOUND_LINE`].
    #[error("line of {0} bytes is too long")]
    TooLong(usize),
    /// Tags or prefix without a command.
    #[error("no command")]
    NoCommand,
    /// A command that is neither letters nor a three-digit numeric.
    #[error("invalid command")]
    BadCommand,
    /// A NUL byte, which IRC forbids.
    #[error("NUL byte in line")]
    Nul,
}

fn unescape_tag(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('\\') => out.push('\\'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

impl Line {
    /// Parses one line (without or with its CR LF).
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.len() > MAX_INBOUND_LINE {
            return Err(ParseError::TooLong(raw.len()));
        }
        if raw.contains('\0') {
            return Err(ParseError::Nul);
        }
        let mut rest = raw.trim_end_matches(['\r', '\n']).trim_start_matches(' ');
        if rest.is_empty() {
            return Err(ParseError::Empty);
        }
        let mut tags = Vec::new();
        if let Some(after) = rest.strip_prefix('@') {
            let (raw_tags, tail) = after.split_once(' ').ok_or(ParseError::NoCommand)?;
            for tag in raw_tags.split(';').filter(|t| !t.is_empty()) {
                match tag.split_once('=') {
                    Some((k, v)) => tags.push((k.to_owned(), Some(unescape_tag(v)))),
                    None => tags.push((tag.to_owned(), None)),
                }
            }
            rest = tail.trim_start_matches(' ');
        }
        let mut prefix = None;
        if let Some(after) = rest.strip_prefix(':') {
            let (raw_prefix, tail) = after.split_once(' ').ok_or(ParseError::NoCommand)?;
            prefix = Some(Prefix::parse(raw_prefix));
            rest = tail.trim_start_matches(' ');
        }
        let (command, mut rest) = match rest.split_once(' ') {
            Some((c, r)) => (c, r),
            None => (rest, ""),
        };
        if command.is_empty() {
            return Err(ParseError::NoCommand);
        }
        let numeric = command.len() == 3 && command.bytes().all(|b| b.is_ascii_digit());
        if !numeric && !command.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ParseError::BadCommand);
        }
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if let Some(trailing) = rest.strip_prefix(':') {
                params.push(trailing.to_owned());
                break;
            }
            match rest.split_once(' ') {
                Some((p, r)) => {
                    params.push(p.to_owned());
                    rest = r;
                }
                None => {
                    params.push(rest.to_owned());
                    break;
                }
            }
        }
        Ok(Self {
            tags,
            prefix,
            command: command.to_ascii_uppercase(),
            params,
        })
    }

    /// A tag's value.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Parameter `i`.
    pub fn param(&self, i: usize) -> Option<&str> {
        self.params.get(i).map(String::as_str)
    }

    /// The sender's nick, when the line has a prefix.
    pub fn nick(&self) -> Option<&str> {
        self.prefix.as_ref().map(|p| p.nick.as_str())
    }
}

/// Builds an outgoing line: `COMMAND p1 p2 last`. The last parameter is sent as trailing (`:last`)
/// when it must be (it is empty, holds a space or starts with `:`). CR, LF and NUL are removed from
/// every parameter, and spaces from the middle ones, so a parameter can't smuggle a second command.
pub fn build(command: &str, params: &[&str]) -> String {
    let mut out = String::with_capacity(64);
    out.push_str(command);
    for (i, p) in params.iter().enumerate() {
        let clean: String = p
            .chars()
            .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
            .collect();
        if i + 1 == params.len() {
            if clean.is_empty() || clean.contains(' ') || clean.starts_with(':') {
                let _ = write!(out, " :{clean}");
            } else {
                let _ = write!(out, " {clean}");
            }
        } else {
            let _ = write!(out, " {}", clean.replace(' ', ""));
        }
    }
    out
}

/// Builds `COMMAND target :text` with the text always trailing, as messages are sent.
pub fn build_message(command: &str, target: &str, text: &str) -> String {
    let mut line = build(command, &[target, "x"]);
    line.truncate(line.len() - 1);
    line.push(':');
    line.extend(text.chars().filter(|c| !matches!(c, '\r' | '\n' | '\0')));
    line
}

/// Decodes raw bytes from the server: UTF-8 when valid, else Latin-1 (every byte one character),
/// which is what older IRC clients send.
pub fn decode(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|&b| b as char).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags_prefix_command_and_params() {
        let l = Line::parse("@time=2026-01-02T03:04:05.000Z;msgid=ab\\:c;+draft/x :nick!user@host PRIVMSG #chan :hello there\r\n")
            .unwrap();
        assert_eq!(l.tag("time"), Some("2026-01-02T03:04:05.000Z"));
        assert_eq!(l.tag("msgid"), Some("ab;c"));
        assert_eq!(l.tag("+draft/x"), None);
        assert_eq!(l.nick(), Some("nick"));
        assert!(l.prefix.as_ref().unwrap().is_user());
        assert_eq!(l.command, "PRIVMSG");
        assert_eq!(l.params, vec!["#chan", "hello there"]);

        let l = Line::parse("PING :irc.example").unwrap();
        assert_eq!(
            (l.command.as_str(), l.param(0)),
            ("PING", Some("irc.example"))
        );
        let l = Line::parse(":srv 001 me :Welcome").unwrap();
        assert!(!l.prefix.as_ref().unwrap().is_user());
        assert_eq!(l.params, vec!["me", "Welcome"]);
        let l = Line::parse(":srv CAP * LS * :sasl message-tags").unwrap();
        assert_eq!(l.params, vec!["*", "LS", "*", "sasl message-tags"]);
        let l = Line::parse("join   #a   ").unwrap();
        assert_eq!((l.command.as_str(), l.params.len()), ("JOIN", 1));
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for bad in [
            "",
            "   ",
            "@tags-only",
            ":prefix-only",
            ":p !!! x",
            "PRIV MSG\0",
            "12 x",
            "@a :b",
        ] {
            assert!(Line::parse(bad).is_err(), "{bad:?} parsed");
        }
        let long = "A".repeat(MAX_INBOUND_LINE + 1);
        assert_eq!(Line::parse(&long), Err(ParseError::TooLong(long.len())));
    }

    #[test]
    fn building_strips_line_breaks() {
        assert_eq!(
            build("PRIVMSG", &["#a", "hi\r\nQUIT :x"]),
            "PRIVMSG #a :hiQUIT :x"
        );
        assert_eq!(build("JOIN", &["#a", "key"]), "JOIN #a key");
        assert_eq!(build("NICK", &["me"]), "NICK me");
        assert_eq!(build("PONG", &[""]), "PONG :");
        assert_eq!(build("PONG", &[":x"]), "PONG ::x");
        assert_eq!(build_message("PRIVMSG", "#a", "hi"), "PRIVMSG #a :hi");
        assert_eq!(
            build_message("NOTICE", "#a b", "x\r\nQUIT"),
            "NOTICE #ab :xQUIT"
        );
    }

    #[test]
    fn latin1_is_decoded() {
        assert_eq!(decode(b"caf\xe9"), "café");
        assert_eq!(decode("café".as_bytes()), "café");
    }
}
