//! What the connector remembers per room, kept in the connector state (saved at most a second
//! after it changes, and when the session ends) so that it holds across restarts:
//!
//! - **Ids.** A room message has two ids: the one its sender gave it (`id`, XEP-0359 origin-id),
//!   which corrections (XEP-0308) name, and the one the room stamped on it (XEP-0359 stanza-id),
//!   which replies, reactions and retractions name. The message map knows a message by the room's
//!   id; the memory links the two, with the message's author, so that a correction or retraction
//!   is accepted only from the author of the message it names.
//! - **Reactions.** XMPP sends a person's whole set of reactions to a message (XEP-0444) each
//!   time; the event model has one reaction added or taken back. Inbound, the last set of each
//!   author per message is kept to tell what changed. Outbound, the bridge's one account reacts
//!   for everyone, so the senders of each key are kept and the set sent is every key someone
//!   still holds.
//! - **The last message seen**, the point catch-up starts from after a reconnect.
//!
//! Memory is bounded: the oldest entries are forgotten first. No message text is kept.

use passerelle_sdk::StateHandle;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

/// Messages remembered per room.
const IDS_PER_ROOM: usize = 4096;
/// Messages whose reactions are remembered per room, each way.
const REACTED_PER_ROOM: usize = 1024;

/// One remembered message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Known {
    /// The id the message map knows it by (the room's stanza-id, else the sender's id).
    pub remote: String,
    /// The sender's own id (`id` / origin-id), which corrections name.
    pub origin: String,
    /// Who sent it: an occupant id, a room nick address or a bare JID; "" for the bridge.
    pub author: String,
}

/// One room's memory.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RoomMemory {
    /// Recent messages, oldest first.
    known: VecDeque<Known>,
    /// Inbound: (author, message) → the author's current reaction set, oldest first.
    seen_reactions: VecDeque<((String, String), Vec<String>)>,
    /// Outbound: message → key → the senders (on other networks) holding it, oldest first.
    our_reactions: VecDeque<(String, BTreeMap<String, BTreeSet<String>>)>,
    /// The server time (ms) of the last message seen, for catch-up.
    pub last_seen_ms: Option<u64>,
}

impl RoomMemory {
    /// Remembers a message.
    pub fn remember(&mut self, known: Known) {
        if self.known.iter().any(|k| k == &known) {
            return;
        }
        self.known.push_back(known);
        while self.known.len() > IDS_PER_ROOM {
            self.known.pop_front();
        }
    }

    /// The message the map knows as `remote`.
    pub fn by_remote(&self, remote: &str) -> Option<&Known> {
        self.known.iter().rev().find(|k| k.remote == remote)
    }

    /// `author`'s message with the sender's id `origin`.
    pub fn by_origin(&self, author: &str, origin: &str) -> Option<&Known> {
        self.known
            .iter()
            .rev()
            .find(|k| k.origin == origin && k.author == author)
    }

    /// Records `author`'s new reaction set on `target`; returns (added, taken back).
    pub fn reactions_seen(
        &mut self,
        author: &str,
        target: &str,
        now: Vec<String>,
    ) -> (Vec<String>, Vec<String>) {
        let key = (author.to_owned(), target.to_owned());
        let before = match self.seen_reactions.iter().position(|(k, _)| *k == key) {
            Some(i) => self
                .seen_reactions
                .remove(i)
                .map(|(_, v)| v)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let added: Vec<String> = unique(&now)
            .into_iter()
            .filter(|r| !before.contains(r))
            .collect();
        let removed: Vec<String> = unique(&before)
            .into_iter()
            .filter(|r| !now.contains(r))
            .collect();
        if !now.is_empty() {
            self.seen_reactions.push_back((key, now));
            while self.seen_reactions.len() > REACTED_PER_ROOM {
                self.seen_reactions.pop_front();
            }
        }
        (added, removed)
    }

    /// Records that `sender` added (or took back) `key` on our behalf on `target`; returns the
    /// whole set to send: every key someone holds when one account reacts for everyone, or the
    /// sender's own keys when each person reacts as themselves (`just_sender`, component mode).
    pub fn our_reaction(
        &mut self,
        target: &str,
        sender: &str,
        key: &str,
        removed: bool,
        just_sender: bool,
    ) -> Vec<String> {
        let mut keys = match self.our_reactions.iter().position(|(t, _)| t == target) {
            Some(i) => self
                .our_reactions
                .remove(i)
                .map(|(_, v)| v)
                .unwrap_or_default(),
            None => BTreeMap::new(),
        };
        if removed {
            if let Some(holders) = keys.get_mut(key) {
                holders.remove(sender);
                if holders.is_empty() {
                    keys.remove(key);
                }
            }
        } else {
            keys.entry(key.to_owned())
                .or_default()
                .insert(sender.to_owned());
        }
        let set: Vec<String> = keys
            .iter()
            .filter(|(_, holders)| !just_sender || holders.contains(sender))
            .map(|(k, _)| k.clone())
            .collect();
        if !keys.is_empty() {
            self.our_reactions.push_back((target.to_owned(), keys));
            while self.our_reactions.len() > REACTED_PER_ROOM {
                self.our_reactions.pop_front();
            }
        }
        set
    }

    /// Notes the server time of a message seen (never moves back).
    pub fn seen_at(&mut self, ms: u64) {
        if self.last_seen_ms.is_none_or(|t| t < ms) {
            self.last_seen_ms = Some(ms);
        }
    }
}

fn unique(list: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    list.iter().filter(|r| seen.insert(*r)).cloned().collect()
}

/// Every room's memory, and which rooms changed since the last save.
#[derive(Debug, Default)]
pub struct Memory {
    rooms: HashMap<String, RoomMemory>,
    dirty: HashSet<String>,
}

fn state_key(room: &str) -> String {
    format!("room\u{1f}{room}")
}

impl Memory {
    /// Loads what the state remembers for these rooms. A record that does not parse (written by
    /// another version) is dropped with a warning.
    pub async fn load<'a>(state: &StateHandle, rooms: impl Iterator<Item = &'a str>) -> Self {
        let mut me = Self::default();
        for room in rooms {
            match state.get(&state_key(room)).await {
                Ok(Some(bytes)) => match serde_json::from_slice::<RoomMemory>(&bytes) {
                    Ok(m) => {
                        me.rooms.insert(room.to_owned(), m);
                    }
                    Err(e) => {
                        tracing::warn!(%room, error = %e, "the XMPP room memory did not parse; starting it afresh")
                    }
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(%room, error = %e, "cannot read the XMPP room memory"),
            }
        }
        me
    }

    /// One room's memory, to read.
    pub fn room(&self, room: &str) -> Option<&RoomMemory> {
        self.rooms.get(room)
    }

    /// One room's memory, to change (saved by the next [`Memory::save`]).
    pub fn room_mut(&mut self, room: &str) -> &mut RoomMemory {
        if !self.dirty.contains(room) {
            self.dirty.insert(room.to_owned());
        }
        self.rooms.entry(room.to_owned()).or_default()
    }

    /// Writes the rooms that changed. A failure is logged and retried at the next save.
    pub async fn save(&mut self, state: &StateHandle) {
        for room in std::mem::take(&mut self.dirty) {
            let Some(memory) = self.rooms.get(&room) else {
                continue;
            };
            let bytes = match serde_json::to_vec(memory) {
                Ok(b) => b,
                Err(_) => continue,
            };
            if let Err(e) = state.put(&state_key(&room), bytes).await {
                tracing::warn!(%room, error = %e, "cannot save the XMPP room memory");
                self.dirty.insert(room);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn ids_are_found_both_ways_and_only_for_the_author() {
        let mut m = RoomMemory::default();
        m.remember(Known {
            remote: "sid1".into(),
            origin: "o1".into(),
            author: "alice".into(),
        });
        assert_eq!(m.by_remote("sid1").map(|k| k.origin.as_str()), Some("o1"));
        assert_eq!(
            m.by_origin("alice", "o1").map(|k| k.remote.as_str()),
            Some("sid1")
        );
        assert!(m.by_origin("mallory", "o1").is_none());
        for i in 0..IDS_PER_ROOM {
            m.remember(Known {
                remote: format!("s{i}"),
                origin: format!("x{i}"),
                author: "bob".into(),
            });
        }
        assert!(
            m.by_remote("sid1").is_none(),
            "the oldest is forgotten first"
        );
    }

    #[test]
    fn inbound_reaction_sets_become_additions_and_removals() {
        let mut m = RoomMemory::default();
        assert_eq!(
            m.reactions_seen("a", "t", s(&["👍", "🎉"])),
            (s(&["👍", "🎉"]), s(&[]))
        );
        assert_eq!(
            m.reactions_seen("a", "t", s(&["🎉", "❤"])),
            (s(&["❤"]), s(&["👍"]))
        );
        assert_eq!(m.reactions_seen("b", "t", s(&["🎉"])), (s(&["🎉"]), s(&[])));
        assert_eq!(
            m.reactions_seen("a", "t", s(&[])),
            (s(&[]), s(&["🎉", "❤"]))
        );
    }

    #[test]
    fn outbound_reactions_keep_a_key_while_anyone_holds_it() {
        let mut m = RoomMemory::default();
        assert_eq!(m.our_reaction("t", "alice", "👍", false, false), s(&["👍"]));
        assert_eq!(m.our_reaction("t", "bob", "👍", false, false), s(&["👍"]));
        assert_eq!(
            m.our_reaction("t", "bob", "❤", false, false),
            s(&["❤", "👍"])
        );
        assert_eq!(
            m.our_reaction("t", "alice", "👍", true, false),
            s(&["❤", "👍"])
        );
        assert_eq!(m.our_reaction("t", "bob", "👍", true, false), s(&["❤"]));
        assert_eq!(m.our_reaction("t", "bob", "❤", true, false), s(&[]));
        // Each person as themselves: only their own keys.
        assert_eq!(m.our_reaction("u", "alice", "👍", false, true), s(&["👍"]));
        assert_eq!(m.our_reaction("u", "bob", "❤", false, true), s(&["❤"]));
        assert_eq!(
            m.our_reaction("u", "alice", "🎉", false, true),
            s(&["🎉", "👍"])
        );
    }

    #[test]
    fn last_seen_never_moves_back() {
        let mut m = RoomMemory::default();
        m.seen_at(10);
        m.seen_at(5);
        assert_eq!(m.last_seen_ms, Some(10));
    }
}
