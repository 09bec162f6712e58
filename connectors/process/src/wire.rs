//! The JSON lines of the protocol (`docs/connector-protocol.md`): what the program writes, read
//! with its size bounded first, and what the daemon writes.

use passerelle_sdk::{
    Capabilities, Event, EventKind, Limits, RemoteMessageId, RoomId, SendError, Sender, Timestamp,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// The protocol version this daemon speaks.
pub const PROTOCOL: u64 = 1;

/// A state key's and value's largest size.
pub const MAX_STATE_KEY: usize = 200;
/// See [`MAX_STATE_KEY`].
pub const MAX_STATE_VALUE: usize = 64 * 1024;

/// One line from the program.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromProgram {
    /// The handshake's answer.
    Ready {
        /// The version it speaks.
        protocol: u64,
        /// Its name, for logs.
        #[serde(default)]
        name: Option<String>,
        /// What it can carry (`Capabilities` field names to `true`).
        #[serde(default)]
        capabilities: serde_json::Map<String, Value>,
        /// Its limits.
        #[serde(default)]
        limits: Limits,
    },
    /// Its connection to its network.
    Status {
        /// `connecting`, `connected` or `disconnected`.
        state: String,
    },
    /// An inbound event; its `event` is read separately, so a bad one is answered by `id`.
    Emit {
        /// The program's id, echoed.
        id: Value,
        /// The event without its key.
        event: Value,
    },
    /// The answer to a send.
    Sent {
        /// The daemon's id of the send.
        id: String,
        /// The message's id on the network.
        #[serde(default)]
        remote_id: Option<String>,
        /// Why it was not sent.
        #[serde(default)]
        error: Option<WireError>,
    },
    /// Reads a state value.
    StateGet {
        /// Echoed.
        id: Value,
        /// The key.
        key: String,
    },
    /// Writes a state value.
    StatePut {
        /// Echoed.
        id: Value,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// A log line.
    Log {
        /// `error`, `warn`, `info` (default) or `debug`.
        #[serde(default)]
        level: Option<String>,
        /// The line.
        message: String,
    },
}

/// A send's typed failure, as the program writes it.
#[derive(Debug, Deserialize)]
pub struct WireError {
    /// `unsupported`, `room_not_found`, `too_large`, `rate_limited`, `disconnected`,
    /// `window_closed` or `rejected`.
    pub kind: String,
    /// For `rate_limited`.
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
    /// Content-free, for `rejected` and `window_closed`.
    #[serde(default)]
    pub reason: Option<String>,
}

impl WireError {
    /// The SDK's error; `what` names the event's kind for `unsupported`.
    pub fn to_send_error(&self, what: &'static str) -> SendError {
        let reason = || {
            let mut r: String = self.reason.clone().unwrap_or_default();
            r.truncate(200);
            r
        };
        match self.kind.as_str() {
            "unsupported" => SendError::Unsupported(what),
            "room_not_found" => SendError::RoomNotFound,
            "too_large" => SendError::TooLarge,
            "rate_limited" => SendError::RateLimited {
                retry_after: Duration::from_secs(self.retry_after_secs.unwrap_or(5).min(3600)),
            },
            "disconnected" => SendError::Disconnected,
            "window_closed" => SendError::WindowClosed(reason()),
            "rejected" => SendError::Rejected(reason()),
            _ => SendError::Rejected("the program answered an unknown error kind".into()),
        }
    }
}

/// An inbound event as the program writes it: the SDK's [`Event`] without its key.
#[derive(Debug, Deserialize)]
pub struct WireEvent {
    room: RoomId,
    sender: Sender,
    #[serde(default)]
    at: Option<Timestamp>,
    #[serde(default)]
    remote_id: Option<RemoteMessageId>,
    #[serde(default)]
    reply_to: Option<RemoteMessageId>,
    #[serde(default)]
    thread_root: Option<RemoteMessageId>,
    kind: EventKind,
}

impl WireEvent {
    /// The event, with a fresh key.
    pub fn into_event(self) -> Event {
        let mut event = Event::new(self.room, self.sender, self.kind);
        if let Some(at) = self.at {
            event.at = at;
        }
        event.remote_id = self.remote_id;
        event.reply_to = self.reply_to;
        event.thread_root = self.thread_root;
        event
    }
}

/// Why a line could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Longer than the limit (its length).
    TooLong(usize),
    /// Not UTF-8.
    NotUtf8,
    /// Not JSON, or not an object of a known type (serde's words, which quote no content).
    Invalid(String),
}

impl Malformed {
    /// A content-free description for the log.
    pub fn why(&self) -> String {
        match self {
            Self::TooLong(n) => format!("a line of {n} bytes, over max_line_bytes"),
            Self::NotUtf8 => "not UTF-8".into(),
            Self::Invalid(why) => why.clone(),
        }
    }
}

/// Reads one line (without its `\n`).
pub fn parse(line: &[u8]) -> Result<FromProgram, Malformed> {
    let text = std::str::from_utf8(line).map_err(|_| Malformed::NotUtf8)?;
    serde_json::from_str::<FromProgram>(text).map_err(|e| {
        // serde's message can quote an unknown variant or field name the program wrote: keep
        // only its category and position.
        Malformed::Invalid(format!(
            "not a protocol message ({:?} error at column {})",
            e.classify(),
            e.column()
        ))
    })
}

/// Reads the capabilities a program declared: names set to `true`; unknown names are ignored
/// (a later version may add some).
pub fn declared_capabilities(map: &serde_json::Map<String, Value>) -> Capabilities {
    let mut caps = Capabilities::default();
    for (name, on) in map {
        if on.as_bool() == Some(true) {
            crate::config::set_capability(&mut caps, name);
        }
    }
    caps
}

/// `init`.
pub fn init(account: &str, rooms: &[RoomId], settings: &Value, data_dir: &Path) -> Value {
    let rooms: Vec<&str> = rooms.iter().map(RoomId::as_str).collect();
    json!({"type": "init", "protocol": PROTOCOL, "account": account, "rooms": rooms,
           "settings": settings, "data_dir": data_dir})
}

/// `send`.
pub fn send(id: &str, origin: &str, link: &str, event: &Event) -> Value {
    json!({"type": "send", "id": id, "origin": origin, "link": link, "event": event})
}

/// `emitted`.
pub fn emitted(id: &Value, result: &str, reason: Option<&str>) -> Value {
    match reason {
        Some(reason) => json!({"type": "emitted", "id": id, "result": result, "reason": reason}),
        None => json!({"type": "emitted", "id": id, "result": result}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_as_documented() {
        let ready = parse(br#"{"type":"ready","protocol":1,"capabilities":{"edits":true,"future":true},"limits":{"max_text_bytes":100},"extra":1}"#);
        let Ok(FromProgram::Ready {
            protocol,
            capabilities,
            limits,
            ..
        }) = ready
        else {
            panic!("{ready:?}");
        };
        assert_eq!(protocol, 1);
        assert!(declared_capabilities(&capabilities).edits);
        assert_eq!(limits.max_text_bytes, Some(100));

        let emit = parse(
            br#"{"type":"emit","id":3,"event":{"room":"general","sender":{"id":"alice"},"remote_id":"m1","kind":{"message":{"text":"hi"}}}}"#,
        );
        let Ok(FromProgram::Emit { id, event }) = emit else {
            panic!("{emit:?}");
        };
        assert_eq!(id, json!(3));
        let event: WireEvent = serde_json::from_value(event).expect("an event");
        let event = event.into_event();
        assert_eq!(event.room.as_str(), "general");
        assert_eq!(event.content().map(|c| c.text.as_str()), Some("hi"));

        let sent = parse(
            br#"{"type":"sent","id":"d-1","error":{"kind":"rate_limited","retry_after_secs":7}}"#,
        );
        let Ok(FromProgram::Sent { error: Some(e), .. }) = sent else {
            panic!("{sent:?}");
        };
        assert_eq!(
            e.to_send_error("message"),
            SendError::RateLimited {
                retry_after: Duration::from_secs(7)
            }
        );
    }

    #[test]
    fn bad_lines_are_named_without_their_content() {
        assert!(matches!(parse(b"\xff\xfe"), Err(Malformed::NotUtf8)));
        for line in [
            &b"not json secret-words"[..],
            br#"{"type":"steal_the_database","secret":"words"}"#,
            br#"{"no_type":1}"#,
            br#"["type"]"#,
        ] {
            let Err(Malformed::Invalid(why)) = parse(line) else {
                panic!("read {line:?}");
            };
            assert!(!why.contains("secret") && !why.contains("steal"), "{why}");
        }
    }
}
