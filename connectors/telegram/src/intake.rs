//! Where updates go, whichever way they arrive (long polling or the webhook): read into events,
//! emitted one by one (each durably stored before the next), and chat migrations followed.
//!
//! A group upgraded to a supergroup gets a new chat id. Links keep naming the old one: the bridge
//! remembers the move in its state (`migrated/<old id>`) and from then on sends to the new chat
//! and reports the new chat's messages under the old room's name.

use crate::inbound::{Migration, Reader};
use passerelle_sdk::signed_link::SignedLinks;
use passerelle_sdk::{Emitter, RoomId, StateHandle};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

/// The configured rooms and where their chats moved.
pub struct Chats {
    moved: Mutex<HashMap<i64, i64>>,
    configured: Vec<i64>,
}

/// The state key of where a configured chat moved (a group upgraded to a supergroup).
pub fn moved_key(old: i64) -> String {
    passerelle_sdk::state::key(&["migrated", &old.to_string()])
}

impl Chats {
    /// The chats of `rooms`, with the moves remembered in `state`.
    pub async fn load(rooms: &[RoomId], state: &StateHandle) -> Self {
        let configured: Vec<i64> = rooms
            .iter()
            .filter_map(|r| crate::config::chat_id(r.as_str()))
            .collect();
        let mut moved = HashMap::new();
        for old in &configured {
            // Before 0.2 the parts were joined with `/`.
            let legacy = format!("migrated/{old}");
            if let Ok(Some(v)) = state.get_moved(&moved_key(*old), &legacy).await
                && let Some(new) = String::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
            {
                moved.insert(*old, new);
            }
        }
        Self {
            moved: Mutex::new(moved),
            configured,
        }
    }

    /// The room a chat's events belong to.
    pub fn room_of(&self, chat: i64) -> String {
        let moved = self.moved.lock().map(|m| m.clone()).unwrap_or_default();
        moved
            .iter()
            .find(|(_, new)| **new == chat)
            .map(|(old, _)| old.to_string())
            .unwrap_or_else(|| chat.to_string())
    }

    /// The chat a room's sends go to.
    pub fn chat_of(&self, room: &RoomId) -> Option<i64> {
        let id = crate::config::chat_id(room.as_str())?;
        let moved = self.moved.lock().ok()?.get(&id).copied();
        Some(moved.unwrap_or(id))
    }

    /// Follows a migration of a configured chat (others are ignored); remembered in `state`.
    pub async fn follow(&self, m: Migration, state: &StateHandle, account: &str) {
        // The old id may itself be where an earlier configured chat moved to.
        let old = self.room_of(m.from).parse::<i64>().unwrap_or(m.from);
        if !self.configured.contains(&old) {
            return;
        }
        if let Ok(mut moved) = self.moved.lock() {
            if moved.get(&old) == Some(&m.to) {
                return;
            }
            moved.insert(old, m.to);
        }
        if let Err(e) = state.put(&moved_key(old), m.to.to_string()).await {
            tracing::warn!(account, error = %e, "chat move not saved; it will be learnt again");
        }
        tracing::warn!(
            account,
            old,
            new = m.to,
            "the group became a supergroup; following it (update the link's room to the new id when you can)"
        );
    }
}

/// Takes updates in.
pub struct Intake {
    /// The bot's own id.
    pub bot_id: i64,
    /// Rooms and moves.
    pub chats: std::sync::Arc<Chats>,
    /// Signed file links.
    pub links: Option<SignedLinks>,
    /// File size cap.
    pub max_bytes: u64,
    /// Where events go.
    pub emitter: Emitter,
    /// Connector state.
    pub state: StateHandle,
    /// For logs.
    pub account: String,
}

impl Intake {
    /// Handles one update; returns once its events are durably stored. An error means they may
    /// not be: the update must be fetched (or delivered) again.
    pub async fn take(&self, update: &Value) -> Result<(), passerelle_sdk::EmitError> {
        let parsed = {
            let chats = self.chats.clone();
            let room_of = move |chat: i64| chats.room_of(chat);
            Reader {
                bot_id: self.bot_id,
                room_of: &room_of,
                links: self.links.as_ref(),
                max_bytes: self.max_bytes,
            }
            .read(update)
        };
        if let Some(m) = parsed.migration {
            self.chats.follow(m, &self.state, &self.account).await;
        }
        if let Some(why) = parsed.skipped {
            tracing::debug!(account = %self.account, item = why, "update not bridged");
        }
        for event in parsed.events {
            self.emitter.emit(event).await?;
        }
        Ok(())
    }
}
