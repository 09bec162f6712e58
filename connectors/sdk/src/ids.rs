//! Typed identifiers. Remote ids are opaque strings to the core: it stores and compares them, never
//! parses them. Each type says how far it must be unique.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a string as this id.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }
    };
}

string_id!(
    /// An account: the key of its `[accounts.NAME]` table, e.g. `irc.libera`. Unique in one daemon.
    AccountId
);
string_id!(
    /// A room on one account's network (an IRC channel, a Matrix room id, an API gateway name).
    /// Unique only within its account.
    RoomId
);
string_id!(
    /// A user on one account's network (an IRC nick, a Matrix user id). Unique only within its account.
    UserId
);
string_id!(
    /// A message id given by a network. Unique only within its account and room.
    RemoteMessageId
);

/// The core's own id for one bridged event, the same on every network it reached. A UUIDv7, so
/// keys sort by creation time. Unique across the daemon's whole store.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventKey(uuid::Uuid);

impl EventKey {
    /// A fresh key (UUIDv7: time-ordered, random tail).
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
    /// The key's 16 bytes, for storage.
    pub fn to_bytes(self) -> [u8; 16] {
        *self.0.as_bytes()
    }
    /// Rebuilds a key from its 16 stored bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(bytes))
    }
    /// Parses the hyphenated text form.
    pub fn parse(s: &str) -> Option<Self> {
        uuid::Uuid::parse_str(s).ok().map(Self)
    }
}

impl Default for EventKey {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

impl fmt::Debug for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventKey({})", self.0.hyphenated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_round_trip_and_sort_by_creation() {
        let a = EventKey::new();
        let b = EventKey::new();
        assert!(a < b);
        assert_eq!(EventKey::from_bytes(a.to_bytes()), a);
        assert_eq!(EventKey::parse(&a.to_string()), Some(a));
        assert_eq!(EventKey::parse("not a key"), None);
    }
}
