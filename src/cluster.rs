//! Cluster mode: several daemons with the same configuration and one PostgreSQL store share the
//! accounts. Each account is owned by one instance at a time through its row in `leases`
//! (owner, epoch, expiry), renewed by heartbeat; PostgreSQL is the only coordinator (no protocol
//! of our own). An instance that stops renewing loses its leases once they expire, and another
//! takes the accounts over at a higher epoch. Every send is claimed first under the epoch
//! (`passerelle_claim`, migration 0002), so an instance that was paused past its lease sends
//! nothing once it comes back: the database refuses the old epoch, and the instance's own clock
//! refuses before even asking once the lease's time is up.
//!
//! Accounts pinned with `cluster.prefer` go to their instance while it is alive; the others are
//! spread evenly over the live instances (each takes its share, in the order of its name among
//! them, and gives back what is over it).

use crate::store::StoreError;
use crate::store::postgres::PostgresStore;
use async_trait::async_trait;
use dashmap::DashMap;
use deadpool_postgres::Pool;
use passerelle_sdk::AccountId;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The SQLSTATE `passerelle_fence` raises when the lease is not held.
pub const LEASE_NOT_HELD: &str = "PSL01";

/// How an instance takes part.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This instance's name (`cluster.instance`): unique among the live instances.
    pub name: String,
    /// How long a lease lasts without renewal (`cluster.lease_secs`).
    pub lease: Duration,
    /// How often leases are renewed and free accounts looked for (a third of `lease`).
    pub heartbeat: Duration,
    /// Accounts pinned to an instance by name (`cluster.prefer`).
    pub prefer: HashMap<AccountId, String>,
}

impl Settings {
    /// Settings with the heartbeat at a third of `lease`.
    pub fn new(name: impl Into<String>, lease: Duration) -> Self {
        Self {
            name: name.into(),
            lease,
            heartbeat: lease / 3,
            prefer: HashMap::new(),
        }
    }
}

/// What the daemon does when an account comes or goes.
#[async_trait]
pub trait Accounts: Send + Sync + 'static {
    /// This instance now owns `account`, at `epoch`: start its connector and its lanes.
    async fn start(&self, account: &AccountId, epoch: i64);
    /// This instance no longer owns `account`: stop its connector and lanes now. Returns once
    /// they are stopped. `handover`: the account is being given back, its lease still held at
    /// that epoch until this returns (a last write fenced by it can be made); `None`: the lease
    /// was lost.
    async fn stop(&self, account: &AccountId, handover: Option<i64>);
}

/// Whether a queued delivery may be handed to its connector now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Claimed under the lease: send it.
    Go,
    /// The row is no longer queued (delivered or given up on meanwhile): skip it.
    Gone,
    /// This instance does not hold the destination's lease (any more): send nothing.
    Lost,
}

#[derive(Clone, Copy, Debug)]
struct Held {
    epoch: i64,
    /// When the lease ends at the latest by this instance's clock: the time the last renewal was
    /// asked plus the lease (the database counted from a later moment).
    valid_until: Instant,
}

/// Who owns an account, as the database says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// The account.
    pub account: AccountId,
    /// The owning instance's name, when it is alive.
    pub instance: Option<String>,
    /// The lease's epoch.
    pub epoch: i64,
    /// Milliseconds until the lease expires (negative: expired).
    pub expires_in_ms: i64,
}

/// One instance's part in the cluster.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// `NAME#INCARNATION`: a restarted instance is a new owner and waits for its old leases to
    /// expire like any other instance would.
    owner: String,
    settings: Settings,
    held: DashMap<AccountId, Held>,
    /// When this instance joined: for one lease after, an account pinned to another instance
    /// waits for it even if it is not alive yet (instances started together come up in any
    /// order, and a pinned account would otherwise move twice).
    joined: Instant,
    /// The names of the instances seen alive since this one joined.
    seen: std::sync::Mutex<BTreeSet<String>>,
    /// Every configured, enabled account (a reload changes them).
    accounts: std::sync::RwLock<BTreeSet<AccountId>>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn not_held(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.code().code() == LEASE_NOT_HELD)
}

impl Cluster {
    /// Joins the cluster of the database `store` uses: registers this instance as alive.
    pub async fn join(store: &PostgresStore, settings: Settings) -> Result<Self, StoreError> {
        let incarnation = uuid::Uuid::now_v7().simple().to_string();
        let owner = format!("{}#{}", settings.name, &incarnation[..16]);
        let cluster = Self {
            inner: Arc::new(Inner {
                pool: store.pool().clone(),
                owner,
                settings,
                held: DashMap::new(),
                joined: Instant::now(),
                seen: std::sync::Mutex::default(),
                accounts: std::sync::RwLock::default(),
            }),
        };
        cluster.heartbeat().await?;
        Ok(cluster)
    }

    /// This instance's owner id (`NAME#INCARNATION`).
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// This instance's name.
    pub fn name(&self) -> &str {
        &self.inner.settings.name
    }

    /// The epoch this instance holds `account` at, while its lease is still valid by its clock.
    pub fn holds(&self, account: &AccountId) -> Option<i64> {
        self.inner
            .held
            .get(account)
            .filter(|h| Instant::now() < h.valid_until)
            .map(|h| h.epoch)
    }

    /// The accounts this instance holds, with their epochs.
    pub fn held(&self) -> BTreeMap<AccountId, i64> {
        self.inner
            .held
            .iter()
            .map(|h| (h.key().clone(), h.epoch))
            .collect()
    }

    /// Claims the queued delivery `outbox_id` to `account` for a send, fenced by the lease.
    pub async fn admit(&self, account: &AccountId, outbox_id: i64) -> Result<Admit, StoreError> {
        let Some(epoch) = self.holds(account) else {
            return Ok(Admit::Lost);
        };
        let client = self.inner.pool.get().await?;
        let claimed = client
            .query_one(
                "SELECT passerelle_claim($1, $2, $3, $4)",
                &[&account.as_str(), &self.inner.owner, &epoch, &outbox_id],
            )
            .await;
        match claimed {
            Ok(row) => Ok(if row.try_get::<_, bool>(0)? {
                Admit::Go
            } else {
                Admit::Gone
            }),
            Err(e) if not_held(&e) => Ok(Admit::Lost),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes (`Some`) or removes (`None`) `key` of `account`'s connector state, fenced by the
    /// lease: in the transaction that holds the lease row at this instance's epoch, so a write
    /// from an instance that lost the account (paused past its lease) is refused and lands
    /// after no write of the new owner. `recorded_at` (ms): a record, purged with the map.
    /// `Ok(false)`: refused, the lease is not this instance's.
    pub async fn state_write(
        &self,
        account: &AccountId,
        key: &str,
        value: Option<&[u8]>,
        recorded_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        let Some(epoch) = self.holds(account) else {
            return Ok(false);
        };
        let mut client = self.inner.pool.get().await?;
        let tx = client.transaction().await?;
        let fenced = tx
            .execute(
                "SELECT passerelle_fence($1, $2, $3)",
                &[&account.as_str(), &self.inner.owner, &epoch],
            )
            .await;
        match fenced {
            Ok(_) => {}
            Err(e) if not_held(&e) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        match value {
            Some(value) => {
                tx.execute(
                    "INSERT INTO connector_state (account, key, value, recorded_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (account, key) DO UPDATE SET value = EXCLUDED.value, recorded_at = EXCLUDED.recorded_at",
                    &[&account.as_str(), &key, &value, &recorded_at],
                )
                .await?;
            }
            None => {
                tx.execute(
                    "DELETE FROM connector_state WHERE account = $1 AND key = $2",
                    &[&account.as_str(), &key],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Keeps `sealed`, the copy of `account`'s data directory, fenced by the lease at `epoch`:
    /// `false` (nothing written) when this instance does not hold it at that epoch.
    pub async fn files_put(
        &self,
        account: &AccountId,
        epoch: i64,
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        let mut client = self.inner.pool.get().await?;
        let tx = client.transaction().await?;
        match tx
            .execute(
                "SELECT passerelle_fence($1, $2, $3)",
                &[&account.as_str(), &self.inner.owner, &epoch],
            )
            .await
        {
            Ok(_) => {}
            Err(e) if not_held(&e) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        tx.execute(
            "INSERT INTO account_files (account, epoch, sealed) VALUES ($1, $2, $3)
             ON CONFLICT (account) DO UPDATE
                SET epoch = EXCLUDED.epoch, written_at = now(), sealed = EXCLUDED.sealed",
            &[&account.as_str(), &epoch, &sealed],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The latest copy of `account`'s data directory, sealed, when one was kept.
    pub async fn files_get(&self, account: &AccountId) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.inner.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT sealed FROM account_files WHERE account = $1",
                &[&account.as_str()],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Runs the cluster's side of this instance until `stop`: every heartbeat, renews the
    /// leases it holds (stopping at once the accounts whose lease was lost), takes free
    /// accounts up to its share and gives back what is over it. `accounts`: every configured,
    /// enabled account. Call [`Cluster::leave`] once the accounts are stopped.
    pub async fn run(
        &self,
        accounts: Vec<AccountId>,
        handler: Arc<dyn Accounts>,
        stop: CancellationToken,
    ) {
        self.set_accounts(accounts);
        let mut failing = false;
        loop {
            let accounts = self
                .inner
                .accounts
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match self.tick(&accounts, handler.as_ref()).await {
                Ok(()) => {
                    if failing {
                        tracing::info!("cluster: the database answers again");
                    }
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cluster: cannot renew the leases; trying again");
                    }
                    failing = true;
                    // Leases that ran out meanwhile are gone whatever the database says later.
                    self.drop_expired(handler.as_ref()).await;
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.inner.settings.heartbeat) => {}
            }
        }
    }

    /// The accounts from now on (a reload added or removed some): from the next heartbeat, a new
    /// one is taken like any free account, and a removed one held here is stopped and given
    /// back.
    pub fn set_accounts(&self, accounts: impl IntoIterator<Item = AccountId>) {
        *self
            .inner
            .accounts
            .write()
            .unwrap_or_else(|e| e.into_inner()) = accounts.into_iter().collect();
    }

    /// Gives every lease back and removes this instance, so that the others take its accounts
    /// over at once rather than after the lease. Call it after the accounts are stopped.
    pub async fn leave(&self) -> Result<(), StoreError> {
        let client = self.inner.pool.get().await?;
        client
            .execute(
                "UPDATE leases SET expires_at = now() WHERE owner = $1",
                &[&self.inner.owner],
            )
            .await?;
        client
            .execute(
                "DELETE FROM cluster_instances WHERE owner = $1",
                &[&self.inner.owner],
            )
            .await?;
        self.inner.held.clear();
        Ok(())
    }

    /// Who owns each account that has a lease row.
    pub async fn owners(&self) -> Result<Vec<Ownership>, StoreError> {
        let client = self.inner.pool.get().await?;
        let rows = client
            .query(
                "SELECT l.account, i.name, l.epoch,
                        (EXTRACT(EPOCH FROM (l.expires_at - now())) * 1000)::BIGINT
                   FROM leases l
                   LEFT JOIN cluster_instances i ON i.owner = l.owner AND i.seen_until > now()
                  ORDER BY l.account COLLATE \"C\"",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Ownership {
                    account: AccountId::new(r.try_get::<_, String>(0)?),
                    instance: r.try_get(1)?,
                    epoch: r.try_get(2)?,
                    expires_in_ms: r.try_get(3)?,
                })
            })
            .collect()
    }

    async fn heartbeat(&self) -> Result<(), StoreError> {
        let client = self.inner.pool.get().await?;
        client
            .execute(
                "INSERT INTO cluster_instances (owner, name, seen_until, started_at)
                 VALUES ($1, $2, now() + make_interval(secs => $3), now())
                 ON CONFLICT (owner) DO UPDATE SET seen_until = EXCLUDED.seen_until",
                &[
                    &self.inner.owner,
                    &self.inner.settings.name,
                    &secs(self.inner.settings.lease),
                ],
            )
            .await?;
        Ok(())
    }

    async fn drop_expired(&self, handler: &dyn Accounts) {
        let now = Instant::now();
        let expired: Vec<AccountId> = self
            .inner
            .held
            .iter()
            .filter(|h| now >= h.valid_until)
            .map(|h| h.key().clone())
            .collect();
        for account in expired {
            self.inner.held.remove(&account);
            tracing::warn!(account = %account, "cluster: lease expired without renewal; account stopped");
            handler.stop(&account, None).await;
        }
    }

    async fn tick(
        &self,
        accounts: &BTreeSet<AccountId>,
        handler: &dyn Accounts,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let lease = secs(inner.settings.lease);
        let asked = Instant::now();
        self.heartbeat().await?;
        let client = inner.pool.get().await?;

        // Renew what is held; what did not renew at the same epoch is lost.
        let renewed: HashMap<String, i64> = client
            .query(
                "UPDATE leases SET expires_at = now() + make_interval(secs => $2)
                  WHERE owner = $1 AND expires_at > now() RETURNING account, epoch",
                &[&inner.owner, &lease],
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?;
        let held: Vec<(AccountId, i64)> = inner
            .held
            .iter()
            .map(|h| (h.key().clone(), h.epoch))
            .collect();
        for (account, epoch) in held {
            if renewed.get(account.as_str()) == Some(&epoch) {
                if let Some(mut h) = inner.held.get_mut(&account) {
                    h.valid_until = asked + inner.settings.lease;
                }
            } else {
                inner.held.remove(&account);
                tracing::warn!(account = %account, epoch, "cluster: lease lost; account stopped");
                handler.stop(&account, None).await;
            }
        }

        // The live instances, in name order: this instance's place among them sets its share.
        let alive: Vec<(String, String)> = client
            .query(
                "SELECT owner, name FROM cluster_instances WHERE seen_until > now()
                  ORDER BY name COLLATE \"C\", owner COLLATE \"C\"",
                &[],
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?;
        let alive_names: BTreeSet<&str> = alive.iter().map(|(_, n)| n.as_str()).collect();
        let rank = alive
            .iter()
            .position(|(o, _)| *o == inner.owner)
            .unwrap_or(alive.len());
        let instances = alive.len().max(rank + 1);

        // Pinned accounts go to their live instance (or, while this one is just starting, to an
        // instance not seen yet, which may be starting too); the rest are shared.
        let starting = inner.joined.elapsed() < inner.settings.lease;
        let seen: BTreeSet<String> = {
            let mut seen = inner.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.extend(alive_names.iter().map(|n| (*n).to_owned()));
            seen.clone()
        };
        let pinned_to = |account: &AccountId| -> Option<&str> {
            inner
                .settings
                .prefer
                .get(account)
                .map(String::as_str)
                .filter(|name| alive_names.contains(name) || (starting && !seen.contains(*name)))
        };
        let shared: Vec<&AccountId> = accounts.iter().filter(|a| pinned_to(a).is_none()).collect();
        let share = shared.len() / instances + usize::from(rank < shared.len() % instances);

        let names: Vec<&str> = accounts.iter().map(AccountId::as_str).collect();
        let taken: BTreeSet<String> = client
            .query(
                "SELECT account FROM leases WHERE account = ANY($1) AND expires_at > now()",
                &[&names],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, tokio_postgres::Error>>()?;

        // Give back one account over the share, or pinned elsewhere, per heartbeat (the other
        // instance takes it at its next).
        let mine_shared = shared
            .iter()
            .filter(|a| inner.held.contains_key(**a))
            .count();
        let held_now: Vec<AccountId> = inner.held.iter().map(|h| h.key().clone()).collect();
        let pinned_elsewhere =
            |a: &&AccountId| matches!(pinned_to(a), Some(name) if name != inner.settings.name);
        let give_back = held_now
            .iter()
            .find(|a| !accounts.contains(*a))
            .or_else(|| held_now.iter().find(pinned_elsewhere))
            .or_else(|| {
                (mine_shared > share)
                    .then(|| shared.iter().rev().find(|a| held_now.contains(a)).copied())
                    .flatten()
            })
            .cloned();
        if let Some(account) = give_back {
            if let Some((_, h)) = inner.held.remove(&account) {
                tracing::info!(account = %account, "cluster: giving the account to another instance");
                handler.stop(&account, Some(h.epoch)).await;
                client
                    .execute(
                        "UPDATE leases SET expires_at = now()
                          WHERE account = $1 AND owner = $2 AND epoch = $3",
                        &[&account.as_str(), &inner.owner, &h.epoch],
                    )
                    .await?;
            }
            return Ok(());
        }

        // Take free accounts: those pinned here, then shared ones up to the share.
        let mut mine = mine_shared;
        for account in accounts {
            if inner.held.contains_key(account) || taken.contains(account.as_str()) {
                continue;
            }
            let wanted = match pinned_to(account) {
                Some(name) => name == inner.settings.name,
                None => mine < share,
            };
            if !wanted {
                continue;
            }
            let took = client
                .query_opt(
                    "INSERT INTO leases (account, owner, epoch, expires_at)
                     VALUES ($1, $2, 1, now() + make_interval(secs => $3))
                     ON CONFLICT (account) DO UPDATE
                        SET owner = EXCLUDED.owner, epoch = leases.epoch + 1,
                            expires_at = EXCLUDED.expires_at
                      WHERE leases.expires_at <= now()
                     RETURNING epoch",
                    &[&account.as_str(), &inner.owner, &lease],
                )
                .await?;
            let Some(row) = took else { continue };
            let epoch: i64 = row.try_get(0)?;
            inner.held.insert(
                account.clone(),
                Held {
                    epoch,
                    valid_until: asked + inner.settings.lease,
                },
            );
            if pinned_to(account).is_none() {
                mine += 1;
            }
            tracing::info!(account = %account, epoch, "cluster: account taken");
            handler.start(account, epoch).await;
        }
        Ok(())
    }
}
