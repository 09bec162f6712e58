//! Connector-private state (sync tokens, update offsets, a negotiated nick) kept in the daemon's
//! store under the connector's own account, so it survives restarts.

use crate::ids::AccountId;
use futures::future::BoxFuture;
use std::sync::Arc;

/// A failure of the store behind a [`StateHandle`].
#[derive(Debug, thiserror::Error)]
#[error("state store: {0}")]
pub struct StateError(pub String);

/// What the daemon's store provides to [`StateHandle`]. Implemented by the daemon (and by the
/// testkit's in-memory harness); connectors use [`StateHandle`].
pub trait StateBackend: Send + Sync + 'static {
    /// Reads `key` of `account`.
    fn get(
        &self,
        account: &AccountId,
        key: &str,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, StateError>>;
    /// Writes `key` of `account`.
    fn put(
        &self,
        account: &AccountId,
        key: &str,
        value: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), StateError>>;
    /// Removes `key` of `account`.
    fn delete(&self, account: &AccountId, key: &str) -> BoxFuture<'static, Result<(), StateError>>;
    /// Writes `key` of `account` as a record, removed with the message map after the daemon's
    /// retention period. A backend without retention keeps it like any value.
    fn put_record(
        &self,
        account: &AccountId,
        key: &str,
        value: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), StateError>> {
        self.put(account, key, value)
    }
}

/// A connector's view of its own state: keys are private to its account.
#[derive(Clone)]
pub struct StateHandle {
    account: AccountId,
    backend: Arc<dyn StateBackend>,
}

impl StateHandle {
    /// A handle for `account` over `backend`.
    pub fn new(account: AccountId, backend: Arc<dyn StateBackend>) -> Self {
        Self { account, backend }
    }
    /// Reads a value.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.backend.get(&self.account, key).await
    }
    /// Writes a value.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<(), StateError> {
        self.backend.put(&self.account, key, value.into()).await
    }
    /// Writes a record: a value kept only as long as the message map keeps its rows (the
    /// daemon's `retention_days`), for things that only matter while their messages do
    /// (delivery statuses, ids already seen).
    pub async fn put_record(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<(), StateError> {
        self.backend
            .put_record(&self.account, key, value.into())
            .await
    }
    /// Removes a value.
    pub async fn delete(&self, key: &str) -> Result<(), StateError> {
        self.backend.delete(&self.account, key).await
    }
    /// Reads a text value (`None` also for bytes that are not UTF-8).
    pub async fn get_text(&self, key: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .get(key)
            .await?
            .and_then(|bytes| String::from_utf8(bytes).ok()))
    }
    /// Reads `key`, or else the value an earlier version kept under `legacy`, which is then moved
    /// to `key` (so state written before a key changed is not lost on upgrade).
    pub async fn get_moved(&self, key: &str, legacy: &str) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(v) = self.get(key).await? {
            return Ok(Some(v));
        }
        let Some(v) = self.get(legacy).await? else {
            return Ok(None);
        };
        self.put(key, v.clone()).await?;
        self.delete(legacy).await?;
        Ok(Some(v))
    }
}

/// A connector-state key from its parts: the first says what is kept (`"reaction"`), the others
/// whose it is (a room, a person, a message). Joined with U+001F, the unit separator, which no
/// network's ids or names contain, so two different lists of parts never make the same key.
pub fn key(parts: &[&str]) -> String {
    parts.join("\u{1f}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Map(Mutex<HashMap<String, Vec<u8>>>);

    impl StateBackend for Map {
        fn get(
            &self,
            _: &AccountId,
            key: &str,
        ) -> BoxFuture<'static, Result<Option<Vec<u8>>, StateError>> {
            let v = self.0.lock().map(|m| m.get(key).cloned()).unwrap_or(None);
            Box::pin(async move { Ok(v) })
        }
        fn put(
            &self,
            _: &AccountId,
            key: &str,
            value: Vec<u8>,
        ) -> BoxFuture<'static, Result<(), StateError>> {
            if let Ok(mut m) = self.0.lock() {
                m.insert(key.to_owned(), value);
            }
            Box::pin(async { Ok(()) })
        }
        fn delete(&self, _: &AccountId, key: &str) -> BoxFuture<'static, Result<(), StateError>> {
            if let Ok(mut m) = self.0.lock() {
                m.remove(key);
            }
            Box::pin(async { Ok(()) })
        }
    }

    #[test]
    fn keys_of_different_parts_differ_even_when_parts_hold_slashes() {
        assert_ne!(key(&["r", "a/b", "c"]), key(&["r", "a", "b/c"]));
        assert_eq!(key(&["reaction", "!r", "$e"]), "reaction\u{1f}!r\u{1f}$e");
    }

    #[tokio::test]
    async fn a_value_under_its_legacy_key_is_moved_on_first_read() {
        let backend = Arc::new(Map::default());
        let state = StateHandle::new(AccountId::new("a"), backend.clone());
        state.put("migrated/1", "2").await.unwrap();
        let new = key(&["migrated", "1"]);
        assert_eq!(
            state.get_moved(&new, "migrated/1").await.unwrap(),
            Some(b"2".to_vec())
        );
        assert_eq!(state.get("migrated/1").await.unwrap(), None);
        assert_eq!(state.get_text(&new).await.unwrap().as_deref(), Some("2"));
        assert_eq!(state.get_moved("x", "y").await.unwrap(), None);
    }
}
