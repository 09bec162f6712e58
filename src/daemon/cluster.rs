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
/// How often each owned account's data directory is copied into the database, when it changed.
const FILES_EVERY: Duration = Duration::from_secs(30);

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
    files: OnceLock<Files>,
}

/// What moving the accounts' data directories takes: the outbox key that seals each copy, the
/// directory of the accounts' directories, the digest of each account's copy last kept, and one
/// copy made at a time.
struct Files {
    sealer: Arc<crate::store::seal::Sealer>,
    root: std::path::PathBuf,
    kept: DashMap<AccountId, [u8; 32]>,
    failing: DashMap<AccountId, ()>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Files {
    /// Where this instance notes the digest of the last copy it kept of `account`'s directory.
    fn marker(&self, account: &AccountId) -> std::path::PathBuf {
        self.root.join(format!(".{}.kept", account.as_str()))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    sha2::Digest::finalize(sha2::Digest::chain_update(
        <sha2::Sha256 as sha2::Digest>::new(),
        bytes,
    ))
    .into()
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

    /// Where the accounts' data directories are (`accounts/` beside the store), and the key
    /// that seals their copies.
    pub(super) fn set_files(
        &self,
        sealer: Arc<crate::store::seal::Sealer>,
        root: std::path::PathBuf,
    ) {
        let _ = self.files.set(Files {
            sealer,
            root,
            kept: DashMap::new(),
            failing: DashMap::new(),
            one_at_a_time: tokio::sync::Mutex::new(()),
        });
    }

    /// Puts the latest copy of `account`'s data directory in place, before it starts here. With
    /// no copy kept (the account never ran in cluster mode), the local directory stays. A copy
    /// that cannot be read is logged and the local directory used.
    async fn restore_files(&self, account: &AccountId) {
        let (Some(cluster), Some(files)) = (self.cluster.get(), self.files.get()) else {
            return;
        };
        let mut wait = Duration::from_millis(500);
        let sealed = loop {
            match cluster.files_get(account).await {
                Ok(sealed) => break sealed,
                Err(e) if wait < Duration::from_secs(8) => {
                    tracing::warn!(account = %account, error = %e, "cluster: cannot read the account's directory copy; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => {
                    tracing::error!(account = %account, error = %e, "cluster: cannot read the account's directory copy; starting with the local directory");
                    return;
                }
            }
        };
        let Some(sealed) = sealed else { return };
        // This instance made that very copy from its directory (and ran the account since, or
        // died): the local directory is as new or newer, and stays.
        let dir = files.root.join(account.as_str());
        let made_here = tokio::fs::read(files.marker(account))
            .await
            .is_ok_and(|m| m == sha256(&sealed));
        if made_here && dir.is_dir() {
            tracing::info!(account = %account, "cluster: the account's directory here is as new as its copy; kept");
            return;
        }
        let Ok(archive) = files.sealer.open(&sealed) else {
            tracing::error!(account = %account, "cluster: the account's directory copy does not open with this outbox key; starting with the local directory");
            return;
        };
        let digest = sha256(&archive);
        match tokio::task::spawn_blocking(move || super::account_files::unpack(&archive, &dir))
            .await
        {
            Ok(Ok(n)) => {
                files.kept.insert(account.clone(), digest);
                tracing::info!(account = %account, files = n, "cluster: the account's directory is in place");
            }
            Ok(Err(e)) => {
                tracing::error!(account = %account, error = %e, "cluster: cannot put the account's directory in place; starting with the local directory")
            }
            Err(e) => {
                tracing::error!(account = %account, error = %e, "cluster: putting the account's directory in place failed")
            }
        }
    }

    /// Copies `account`'s data directory into the database under its lease at `epoch`, when it
    /// changed since the last copy kept.
    async fn keep_account_files(&self, account: &AccountId, epoch: i64) {
        let (Some(cluster), Some(files)) = (self.cluster.get(), self.files.get()) else {
            return;
        };
        let _one = files.one_at_a_time.lock().await;
        let dir = files.root.join(account.as_str());
        let packed = match tokio::task::spawn_blocking(move || super::account_files::pack(&dir))
            .await
        {
            Ok(Ok(Some(packed))) => packed,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                // Said once per account until a copy is made again, not every interval.
                if files.failing.insert(account.clone(), ()).is_none() {
                    tracing::error!(account = %account, error = %e, "cluster: cannot copy the account's directory; the last copy stays");
                }
                return;
            }
            Err(e) => {
                tracing::error!(account = %account, error = %e, "cluster: copying the account's directory failed");
                return;
            }
        };
        files.failing.remove(account);
        let (archive, digest) = packed;
        if files.kept.get(account).is_some_and(|d| *d == digest) {
            return;
        }
        let sealed = files.sealer.seal(&archive);
        match cluster.files_put(account, epoch, &sealed).await {
            Ok(true) => {
                files.kept.insert(account.clone(), digest);
                if let Err(e) = tokio::fs::write(files.marker(account), sha256(&sealed)).await {
                    tracing::warn!(account = %account, error = %e, "cluster: cannot note the copy made");
                }
                tracing::debug!(account = %account, bytes = sealed.len(), "cluster: the account's directory is copied");
            }
            Ok(false) => {
                tracing::info!(account = %account, "cluster: the account's directory is not copied: its lease moved");
            }
            Err(e) => {
                tracing::warn!(account = %account, error = %e, "cluster: cannot copy the account's directory; trying again later");
            }
        }
    }

    /// Copies the data directory of every account started here (at shutdown, once the
    /// connectors have stopped).
    pub(super) async fn keep_all_files(&self) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        for (account, epoch) in cluster.held() {
            if self.started(&account) {
                self.keep_account_files(&account, epoch).await;
            }
        }
    }

    /// Whether `account`'s gate is open here (its directory restored, its connector let run).
    fn started(&self, account: &AccountId) -> bool {
        self.accounts
            .get(account)
            .is_some_and(|held| *held.owned.borrow())
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
        self.restore_files(account).await;
        if let Some(held) = self.accounts.get(account) {
            held.owned.send_replace(true);
        }
        self.wake_queued(Some(account)).await;
        if let Some(Some(relays)) = self.relays.get() {
            relays.wake(account);
        }
    }

    async fn stop(&self, account: &AccountId, handover: Option<i64>) {
        let running = match self.accounts.get(account) {
            Some(held) => {
                held.owned.send_replace(false);
                held.running.clone()
            }
            None => return,
        };
        let mut running = running;
        let stopped = tokio::time::timeout(STOP_WAIT, running.wait_for(|r| !*r))
            .await
            .is_ok();
        if !stopped {
            tracing::warn!(account = %account, "cluster: the connector did not stop within 15 s");
        }
        if let Some(epoch) = handover {
            self.keep_account_files(account, epoch).await;
        }
    }
}

/// Copies the data directory of each account started here every [`FILES_EVERY`], when it
/// changed, until `stop` (the last copies are made at shutdown, [`Gates::keep_all_files`]).
pub(super) async fn keep_files(gates: Arc<Gates>, stop: CancellationToken) {
    let mut every = tokio::time::interval(FILES_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let Some(cluster) = gates.cluster.get() else {
            continue;
        };
        for (account, epoch) in cluster.held() {
            if stop.is_cancelled() {
                return;
            }
            if gates.started(&account) {
                gates.keep_account_files(&account, epoch).await;
            }
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
