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
}
