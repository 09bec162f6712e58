//! The rooms the links name (room ids `!…` or aliases `#…:server`) and the Matrix room ids they
//! resolve to.

use matrix_sdk::Client;
use matrix_sdk::ruma::{OwnedRoomAliasId, OwnedRoomId};
use passerelle_sdk::RoomId;
use std::collections::HashMap;
use tracing::warn;

/// Configured room names ↔ Matrix room ids.
#[derive(Debug, Default)]
pub struct RoomMap {
    by_id: HashMap<OwnedRoomId, RoomId>,
    by_name: HashMap<RoomId, OwnedRoomId>,
}

impl RoomMap {
    /// Resolves every configured room; aliases the homeserver does not know are left out (and
    /// logged): sends to them answer "room not found".
    pub async fn resolve(client: &Client, names: &[RoomId]) -> Self {
        let mut map = Self::default();
        for name in names {
            let id = if name.as_str().starts_with('#') {
                let Ok(alias) = OwnedRoomAliasId::try_from(name.as_str()) else {
                    continue;
                };
                match client.resolve_room_alias(&alias).await {
                    Ok(r) => r.room_id,
                    Err(e) => {
                        warn!(room = %name, error = %e, "alias not resolved");
                        continue;
                    }
                }
            } else {
                match OwnedRoomId::try_from(name.as_str()) {
                    Ok(id) => id,
                    Err(_) => continue,
                }
            };
            map.insert(name.clone(), id);
        }
        map
    }

    /// Adds one room.
    pub fn insert(&mut self, name: RoomId, id: OwnedRoomId) {
        self.by_id.insert(id.clone(), name.clone());
        self.by_name.insert(name, id);
    }

    /// The configured name of a Matrix room.
    pub fn name(&self, id: &OwnedRoomId) -> Option<&RoomId> {
        self.by_id.get(id)
    }

    /// The Matrix room id of a configured name.
    pub fn id(&self, name: &RoomId) -> Option<&OwnedRoomId> {
        self.by_name.get(name)
    }

    /// Whether a Matrix room is linked.
    pub fn contains(&self, id: &OwnedRoomId) -> bool {
        self.by_id.contains_key(id)
    }

    /// Every resolved Matrix room id.
    pub fn ids(&self) -> impl Iterator<Item = &OwnedRoomId> {
        self.by_id.keys()
    }
}
