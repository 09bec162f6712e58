//! Room keys for the routing maps. A room name of up to [`INLINE`] bytes (nearly all IRC channels,
//! Matrix room ids, gateway names) is kept inside the map's slot, so a look-up compares it there
//! instead of following a pointer to another page: with 100,000 links that pointer is a cache and
//! TLB miss per look-up.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// The longest name kept inline.
pub const INLINE: usize = 46;

/// A room name as a map key. Hashes and compares as the bytes it holds, so maps keyed by it are
/// looked up with `name.as_bytes()`.
#[derive(Clone)]
pub enum RoomKey {
    /// Up to [`INLINE`] bytes, in place.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// Longer names.
    Heap(Box<str>),
}

impl RoomKey {
    /// The key for `name`.
    pub fn new(name: &str) -> Self {
        if name.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            // INLINE < 256, so the length fits.
            Self::Inline {
                len: name.len() as u8,
                bytes,
            }
        } else {
            Self::Heap(name.into())
        }
    }

    /// The name's bytes: what the maps hash and compare (no UTF-8 check on the hot path).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(name) => name.as_bytes(),
        }
    }
}

/// Maps keyed by [`RoomKey`] are looked up with `name.as_bytes()`.
impl Borrow<[u8]> for RoomKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Hash for RoomKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl PartialEq for RoomKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for RoomKey {}

impl std::fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn short_and_long_names_are_found_by_their_text() {
        let long = "!".repeat(INLINE + 1);
        let edge = "é".repeat(INLINE / 2);
        let mut map = HashMap::new();
        for (i, name) in ["#a", "", edge.as_str(), long.as_str()].iter().enumerate() {
            map.insert(RoomKey::new(name), i);
        }
        assert!(matches!(RoomKey::new(&edge), RoomKey::Inline { .. }));
        assert!(matches!(RoomKey::new(&long), RoomKey::Heap(_)));
        assert_eq!(map.get("#a".as_bytes()), Some(&0));
        assert_eq!(map.get("".as_bytes()), Some(&1));
        assert_eq!(map.get(edge.as_bytes()), Some(&2));
        assert_eq!(map.get(long.as_bytes()), Some(&3));
        assert_eq!(map.get("#b".as_bytes()), None);
        assert_eq!(RoomKey::new(&long).as_bytes(), long.as_bytes());
    }
}
