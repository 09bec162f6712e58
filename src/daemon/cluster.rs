//! Cluster mode's wiring: each account's supervisor waits behind a gate this instance opens
//! while it owns the account (`supervisor::Gate`), lanes run only for owned destinations, and
//! rows other instances queue for them are announced on the store's channel (and swept for,
//! should a notice be lost).

use crate::bus::Lanes;
use crate::cluster::Cluster;
use crate::store::Store;
use crate::store::postgres::{PostgresStore, RELAY_CHANNEL};
use crate::supervisor::Gate;
use async_trait::async_trait;
use dashmap::DashMap;
use passerelle_sdk::{AccountId, RoomId};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the outbox is read for rows of owned accounts whose notice was lost.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How long giving an account up waits for its connector to stop.
const STOP_WAIT: Duration = Duration::from_secs(15);

struct Held {
    owned: watch::Sender<bool>,
    running: watch::Receiver<bool>,
}

/// The gates of every account, opened and closed by the cluster.
#[derive(Default)]
pub(super) struct Gates {
    accounts: DashMap<AccountId, Held>,
    cluster: OnceLock<Cluster>,
    lanes: OnceLock<Lanes>,
    store: OnceLock<Arc<dyn Store>>,
    relays: OnceLock<Option<Arc<crate::relay::Relays>>>,
}

impl Gates {
    /// The gate of `account`'s supervisor (replacing an earlier one of the same account).
    pub(super) fn gate(&self, account: &AccountId) -> Gate {
        let owned_now = self
            .cluster
            .get()
            .is_some_and(|c| c.holds(account).is_some());
        let (owned, owned_rx) = watch::channel(owned_now);
        let (running, running_rx) = watch::channel(false);
        self.accounts.insert(
            account.clone(),
            Held {
                owned,
                running: running_rx,
            },
        );
        Gate {
            owned: owned_rx,
            running,
        }
    }

    pub(super) fn set(
        &self,
        cluster: Cluster,
        lanes: Lanes,
        store: Arc<dyn Store>,
        relays: Option<Arc<crate::relay::Relays>>,
    ) {
        let _ = self.cluster.set(cluster);
        let _ = self.lanes.set(lanes);
        let _ = self.store.set(store);
        let _ = self.relays.set(relays);
    }

    /// Wakes the lanes of every destination with queued rows, of `account` or of every owned one.
    async fn wake_queued(&self, account: Option<&AccountId>) {
        let (Some(store), Some(lanes)) = (self.store.get(), self.lanes.get()) else {
            return;
        };
        match store.pending_destinations().await {
            Ok(destinations) => {
                for (a, room) in destinations {
                    if account.is_none_or(|want| *want == a) {
                        lanes.wake(&a, &room);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cluster: cannot read the outbox; trying again"),
        }
    }
}

#[async_trait]
impl crate::cluster::Accounts for Gates {
    async fn start(&self, account: &AccountId, _epoch: i64) {
        if let Some(held) = self.accounts.get(account) {
            held.owned.send_replace(true);
        }
        self.wake_queued(Some(account)).await;
        if let Some(Some(relays)) = self.relays.get() {
            relays.wake(account);
        }
    }

    async fn stop(&self, account: &AccountId) {
        let running = match self.accounts.get(account) {
            Some(held) => {
                held.owned.send_replace(false);
                held.running.clone()
            }
            None => return,
        };
        let mut running = running;
        let stopped = tokio::time::timeout(STOP_WAIT, running.wait_for(|r| !*r)).await;
        if stopped.is_err() {
            tracing::warn!(account = %account, "cluster: the connector did not stop within 15 s");
        }
    }
}

/// Follows the notices of rows queued by other instances, and sweeps the outbox now and then,
/// waking the lanes of owned destinations. Reconnects with backoff until `stop`.
pub(super) async fn follow_notices(
    store: PostgresStore,
    cluster: Cluster,
    gates: Arc<Gates>,
    stop: CancellationToken,
) {
    let mut wait = Duration::from_millis(500);
    loop {
        match store.listen().await {
            Ok(mut listener) => {
                wait = Duration::from_millis(500);
                // Anything announced while no one listened.
                gates.wake_queued(None).await;
                let mut sweep = tokio::time::interval(SWEEP_EVERY);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        notice = listener.notices.recv() => match notice {
                            Some((channel, notice)) if channel == RELAY_CHANNEL => {
                                if let Some(Some(relays)) = gates.relays.get() {
                                    relays.on_notice(&notice);
                                }
                            }
                            Some((_, notice)) => on_notice(&notice, &cluster, &gates).await,
                            None => break,
                        },
                        _ = sweep.tick() => gates.wake_queued(None).await,
                    }
                }
                tracing::warn!("cluster: the listening connection ended; reconnecting");
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cluster: cannot listen for queued rows; trying again");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

async fn on_notice(notice: &str, cluster: &Cluster, gates: &Gates) {
    let mut parts = notice.splitn(3, '\u{1f}');
    let (Some(owner), Some(account), Some(room)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    if owner == cluster.owner() {
        return; // queued here: the router handed it to its lane already
    }
    let account = AccountId::new(account);
    if cluster.holds(&account).is_none() {
        return;
    }
    match (room.is_empty(), gates.lanes.get()) {
        (true, _) => gates.wake_queued(Some(&account)).await,
        (false, Some(lanes)) => lanes.wake(&account, &RoomId::new(room)),
        (false, None) => {}
    }
}

/// Connector state in cluster mode: read from the shared store, written only under the
/// account's lease ([`Cluster::state_write`]); a write refused because the lease moved fails
/// with an error the connector logs, and changes nothing.
pub(super) struct FencedState {
    pub(super) store: Arc<dyn Store>,
    pub(super) cluster: Cluster,
}

impl FencedState {
    fn write(
        &self,
        account: &AccountId,
        key: &str,
        value: Option<Vec<u8>>,
        recorded_at: Option<i64>,
    ) -> futures::future::BoxFuture<'static, Result<(), passerelle_sdk::StateError>> {
        let (cluster, account, key) = (self.cluster.clone(), account.clone(), key.to_owned());
        Box::pin(async move {
            match cluster
                .state_write(&account, &key, value.as_deref(), recorded_at)
                .await
            {
                Ok(true) => Ok(()),
                Ok(false) => Err(passerelle_sdk::StateError(
                    "not written: another instance owns this account now".into(),
                )),
                Err(e) => Err(passerelle_sdk::StateError(e.to_string())),
            }
        })
    }
}

impl passerelle_sdk::StateBackend for FencedState {
    /// Reads need no lease: as the store reads them.
    fn get(
        &self,
        account: &AccountId,
        key: &str,
    ) -> futures::future::BoxFuture<'static, Result<Option<Vec<u8>>, passerelle_sdk::StateError>>
    {
        passerelle_sdk::StateBackend::get(
            &crate::store::StoreState(self.store.clone()),
            account,
            key,
        )
    }

    fn put(
        &self,
        account: &AccountId,
        key: &str,
        value: Vec<u8>,
    ) -> futures::future::BoxFuture<'static, Result<(), passerelle_sdk::StateError>> {
        self.write(account, key, Some(value), None)
    }

    fn put_record(
        &self,
        account: &AccountId,
        key: &str,
        value: Vec<u8>,
    ) -> futures::future::BoxFuture<'static, Result<(), passerelle_sdk::StateError>> {
        let now = i64::try_from(passerelle_sdk::Timestamp::now().0).unwrap_or(i64::MAX);
        self.write(account, key, Some(value), Some(now))
    }

    fn delete(
        &self,
        account: &AccountId,
        key: &str,
    ) -> futures::future::BoxFuture<'static, Result<(), passerelle_sdk::StateError>> {
        self.write(account, key, None, None)
    }
}
