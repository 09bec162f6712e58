//! Paste links: the whole text of a message that was cut to a destination's lines (IRC's
//! `max_lines`), readable for a while through a link the daemon serves, when the operator set
//! `[pastes] public_url`.
//!
//! A paste is made by the lane that delivers the cut message, just before it sends it. Its id
//! and the link's signature are HMACs (under `pastes.key`, kept beside the database) of the
//! event, the destination and the id: a retry of the same delivery makes the same paste, and no
//! link can be guessed or forged. The text is sealed with the outbox key (never at rest in clear)
//! and deleted `keep_hours` after it was made; an expired or unknown link answers 404.

use crate::config::PastesConfig;
use crate::store::seal::Sealer;
use crate::store::{Store, StoreError};
use hmac::{Hmac, Mac};
use passerelle_sdk::{AccountId, EventKey, RoomId, Timestamp};
use sha2::Sha256;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The path the links are served under.
pub const PATH: &str = "/pastes";

/// Makes, reads and purges pastes.
pub struct Pastes {
    public_url: String,
    keep: Duration,
    key: [u8; 32],
    sealer: Arc<Sealer>,
    store: Arc<dyn Store>,
}

impl Pastes {
    /// Paste links as configured; `None` when `[pastes] public_url` is not set. The key is read
    /// from (or made once into) `pastes.key` in `data_dir`.
    pub fn new(
        config: &PastesConfig,
        data_dir: &Path,
        sealer: Arc<Sealer>,
        store: Arc<dyn Store>,
    ) -> std::io::Result<Option<Self>> {
        let Some(public_url) = &config.public_url else {
            return Ok(None);
        };
        let key = passerelle_sdk::signed_link::load_key(&data_dir.join("pastes.key"))?;
        Ok(Some(Self {
            public_url: public_url.trim_end_matches('/').to_owned(),
            keep: Duration::from_secs(config.keep_hours.saturating_mul(3600)),
            key,
            sealer,
            store,
        }))
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn signature(&self, id: &str) -> String {
        self.mac(&[b"signature", id.as_bytes()])
    }

    /// Keeps `text` (the whole message bound for `account`'s `room`) and returns its link.
    pub async fn publish(
        &self,
        key: EventKey,
        account: &AccountId,
        room: &RoomId,
        text: &str,
    ) -> Result<String, StoreError> {
        let key = key.to_string();
        let id = self.mac(&[
            b"id",
            key.as_bytes(),
            account.as_str().as_bytes(),
            room.as_str().as_bytes(),
        ]);
        let expires = Timestamp(
            Timestamp::now()
                .0
                .saturating_add(self.keep.as_millis() as u64),
        );
        self.store
            .paste_put(&id, expires, self.sealer.seal(text.as_bytes()))
            .await?;
        Ok(format!(
            "{}{PATH}/{id}/{}",
            self.public_url,
            self.signature(&id)
        ))
    }

    /// The text behind a link's `id` and `signature`, while it has not expired.
    pub async fn read(&self, id: &str, signature: &str) -> Option<String> {
        let expected = self.signature(id);
        let signed: bool =
            subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), signature.as_bytes()).into();
        if !signed || expected.is_empty() {
            return None;
        }
        let sealed = match self.store.paste_get(id, Timestamp::now()).await {
            Ok(found) => found?,
            Err(e) => {
                tracing::error!(error = %e, "cannot read a paste");
                return None;
            }
        };
        let plain = self.sealer.open(&sealed).ok()?;
        String::from_utf8(plain).ok()
    }

    /// Deletes the expired pastes; how many.
    pub async fn purge(&self) -> Result<u64, StoreError> {
        self.store.paste_purge(Timestamp::now()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn pastes(dir: &Path, keep_hours: u64) -> Pastes {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let sealer = Arc::new(Sealer::load(None, None, &dir.join("outbox.key")).unwrap());
        let config = PastesConfig {
            public_url: Some("https://bridge.example.org/".into()),
            keep_hours,
        };
        Pastes::new(&config, dir, sealer, store).unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_link_reads_its_text_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let p = pastes(dir.path(), 24);
        let key = EventKey::new();
        let (account, room) = (AccountId::new("irc.libera"), RoomId::new("#x"));
        let link = p
            .publish(key, &account, &room, "line 1\nline 2")
            .await
            .unwrap();
        let rest = link
            .strip_prefix("https://bridge.example.org/pastes/")
            .expect("under the public URL");
        let (id, sig) = rest.split_once('/').unwrap();
        assert_eq!(p.read(id, sig).await.as_deref(), Some("line 1\nline 2"));
        // The same delivery again makes the same link; another destination another one.
        assert_eq!(
            p.publish(key, &account, &room, "line 1\nline 2")
                .await
                .unwrap(),
            link
        );
        let other = p
            .publish(key, &account, &RoomId::new("#y"), "other")
            .await
            .unwrap();
        assert_ne!(other, link);
        // A wrong or missing signature, or another id, reads nothing.
        let mut forged = sig.to_owned();
        forged.replace_range(0..1, if sig.starts_with('0') { "1" } else { "0" });
        assert_eq!(p.read(id, &forged).await, None);
        assert_eq!(p.read(id, "").await, None);
        assert_eq!(p.read("0123", sig).await, None);
        // At rest the text is sealed.
        let sealed = p
            .store
            .paste_get(id, Timestamp::now())
            .await
            .unwrap()
            .unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("line 1"));
    }

    #[tokio::test]
    async fn an_expired_paste_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let p = pastes(dir.path(), 0);
        let link = p
            .publish(
                EventKey::new(),
                &AccountId::new("a"),
                &RoomId::new("#x"),
                "t",
            )
            .await
            .unwrap();
        let (id, sig) = link
            .rsplit_once("/pastes/")
            .unwrap()
            .1
            .split_once('/')
            .unwrap();
        assert_eq!(p.read(id, sig).await, None, "kept for 0 hours");
        assert_eq!(p.purge().await.unwrap(), 1);
    }
}
