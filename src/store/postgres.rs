//! The PostgreSQL store (`store.url = "postgres://…"`): tokio-postgres with a deadpool pool.
//!
//! The same tables as the SQLite store, in PostgreSQL's types, with numbered migrations of its
//! own in `postgres/`, applied in order under an advisory lock (several daemons may start at
//! once) and tracked in `passerelle_schema`. Two things differ from SQLite because PostgreSQL
//! runs transactions at once:
//! - dedupe is the `remote_ids` primary key: a second instance storing the same (account, room,
//!   remote id) waits for the first's commit and then stores nothing;
//! - outbox ids come from a sequence, which hands out numbers in the order transactions ask, not
//!   the order they commit. A reader that takes "the rows after id N" would then miss a row that
//!   commits late with a lower id. So every transaction that queues deliveries first takes a
//!   per-room advisory lock for each destination room (in one global order, so two transactions
//!   never wait for each other), which makes ids commit in order within a room.

use super::{
    Accepted, Completion, EventInfo, NewDelivery, NewEvent, OutboxEntry, RoomCounts, Store,
    StoreError,
};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Transaction};
use passerelle_sdk::{AccountId, DeadLetter, EventKey, RemoteMessageId, RoomId, Timestamp};
use std::sync::Arc;
use std::time::Duration;

/// The migrations, in order; entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("postgres/0001_init.sql"),
    include_str!("postgres/0002_cluster.sql"),
];

/// The schema version this build migrates to.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock (an arbitrary constant, "passerelle" in ASCII) held while migrating.
const MIGRATION_LOCK: i64 = 0x7061_7373_6572_656c;

/// Connections kept when `store.pool_size` is not set.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// A store in one PostgreSQL database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// `user@host:port/dbname`, without the password.
    name: Arc<str>,
    /// Cluster mode: this instance's owner id, which tags the notices of rows it queues.
    notify_as: Arc<std::sync::OnceLock<String>>,
    /// The connection settings, for the listening connection (outside the pool).
    config: Arc<tokio_postgres::Config>,
}

/// A connection of its own that listens on [`OUTBOX_CHANNEL`]; the notices arrive on
/// `notices` until the connection ends (then the channel closes).
pub struct Listener {
    /// Kept for the connection to live.
    pub client: tokio_postgres::Client,
    /// Each notice's payload.
    pub notices: tokio::sync::mpsc::Receiver<String>,
}

/// The channel on which a queued row is announced to the instance that delivers it:
/// `OWNER\x1fACCOUNT\x1fROOM` (ROOM left empty when the notice would be too long: read every
/// room of the account).
pub const OUTBOX_CHANNEL: &str = "passerelle_outbox";

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // A database error's Display is only "db error"; its message and code name tables,
        // constraints and ids (never a payload, which is sealed bytes).
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            let text = format!("{} ({code})", db.message());
            // Class 08: connection exceptions; 57P0x: the server shutting down or starting;
            // 53300: too many connections.
            return if code.starts_with("08") || code.starts_with("57P0") || code == "53300" {
                StoreError::Unavailable(text)
            } else {
                StoreError::Database(text)
            };
        }
        let kind = e.to_string();
        let text = match std::error::Error::source(&e) {
            Some(cause) => format!("{kind}: {cause}"),
            None => kind.clone(),
        };
        let unreachable = e.is_closed()
            || matches!(
                kind.as_str(),
                "error communicating with the server"
                    | "error connecting to server"
                    | "timeout waiting for server"
            );
        if unreachable {
            StoreError::Unavailable(text)
        } else {
            StoreError::Database(text)
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            deadpool_postgres::PoolError::Timeout(kind) => {
                StoreError::Unavailable(format!("connection pool: timed out ({kind:?})"))
            }
            other => StoreError::Database(format!("connection pool: {other}")),
        }
    }
}

/// What a URL names, without its password: `user@host:port/dbname`, for errors and logs.
pub fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or("(user)"),
        config.get_dbname().unwrap_or("(database)")
    )
}

impl PostgresStore {
    /// Connects to the database `url` names and migrates it. `pool_size` connections at most.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Database(format!("not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("passerelle");
        }
        let manager = Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(15)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Database(format!("connection pool: {e}")))?;
        let store = Self {
            pool,
            name: describe(&config).into(),
            notify_as: Arc::default(),
            config: Arc::new(config.clone()),
        };
        store.migrate().await.map_err(|e| match e {
            StoreError::Database(msg) => {
                StoreError::Database(format!("{}: {msg}", describe(&config)))
            }
            StoreError::Unavailable(msg) => {
                StoreError::Unavailable(format!("{}: {msg}", describe(&config)))
            }
            other => other,
        })?;
        Ok(store)
    }

    /// [`PostgresStore::connect`], trying again while the database cannot be reached (it may
    /// be starting beside the daemon), for at most `patience`, or until `stop` is cancelled.
    /// Any other failure (a refused password, a database that does not exist) ends it at once.
    pub async fn connect_patiently(
        url: &str,
        pool_size: usize,
        patience: Duration,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Self, StoreError> {
        let started = std::time::Instant::now();
        let mut wait = Duration::from_millis(500);
        loop {
            match Self::connect(url, pool_size).await {
                Err(StoreError::Unavailable(why)) if started.elapsed() + wait < patience => {
                    tracing::warn!(
                        error = %why,
                        retry_in_ms = wait.as_millis() as u64,
                        "store.url: the database cannot be reached yet; trying again"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.cancelled() => {
                            return Err(StoreError::Unavailable(format!("{why} (stopped waiting)")));
                        }
                    }
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                other => return other,
            }
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS passerelle_schema (version BIGINT NOT NULL)")
            .await?;
        let version: i64 = match tx
            .query_opt("SELECT version FROM passerelle_schema", &[])
            .await?
        {
            Some(row) => row.try_get(0)?,
            None => {
                tx.execute("INSERT INTO passerelle_schema (version) VALUES (0)", &[])
                    .await?;
                0
            }
        };
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(sql).await?;
            tx.execute(
                "UPDATE passerelle_schema SET version = $1",
                &[&((i + 1) as i64)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_one("SELECT version FROM passerelle_schema", &[])
            .await?
            .try_get(0)?)
    }

    /// From now on, announces every row it queues on [`OUTBOX_CHANNEL`], tagged `owner`
    /// (cluster mode: the destination's owner may be another instance). Set once.
    pub fn announce_as(&self, owner: &str) {
        let _ = self.notify_as.set(owner.to_owned());
    }

    /// Opens a connection that listens on [`OUTBOX_CHANNEL`].
    pub async fn listen(&self) -> Result<Listener, StoreError> {
        let (client, mut connection) = self.config.connect(tokio_postgres::NoTls).await?;
        let (tx, notices) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
                match message {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                        // A full queue drops the notice: the owner's sweep finds the row.
                        let _ = tx.try_send(n.payload().to_owned());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %StoreError::from(e), "cluster: the listening connection failed");
                        return;
                    }
                    None => return,
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {OUTBOX_CHANNEL}"))
            .await?;
        Ok(Listener { client, notices })
    }

    /// What the store's URL names, without its password: `user@host:port/dbname`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool, for the migration tool and cluster coordination.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }
}

fn key_from(bytes: Vec<u8>) -> Result<EventKey, StoreError> {
    let array: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Database("malformed event key in store".into()))?;
    Ok(EventKey::from_bytes(array))
}

fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

fn from_ms(v: i64) -> Timestamp {
    Timestamp(v.max(0) as u64)
}

fn count(v: i64) -> u64 {
    v.max(0) as u64
}

/// The lock key of one destination room: the first 8 bytes of SHA-256 over account and room.
fn room_lock(account: &AccountId, room: &RoomId) -> i64 {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(account.as_str().as_bytes());
    hash.update([0u8]);
    hash.update(room.as_str().as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

impl PostgresStore {
    /// Announces the destinations of `deliveries` on [`OUTBOX_CHANNEL`] when the transaction
    /// commits (cluster mode only).
    async fn announce<'a>(
        &self,
        tx: &Transaction<'_>,
        deliveries: impl Iterator<Item = &'a NewDelivery>,
    ) -> Result<(), StoreError> {
        let Some(owner) = self.notify_as.get() else {
            return Ok(());
        };
        let mut notices: Vec<String> = deliveries
            .filter_map(|d| {
                // PostgreSQL takes notices under 8,000 bytes; without one, the owner's sweep
                // finds the row within seconds.
                let notice = format!("{owner}\u{1f}{}\u{1f}{}", d.account, d.room);
                let short = format!("{owner}\u{1f}{}\u{1f}", d.account);
                [notice, short].into_iter().find(|n| n.len() < 7_900)
            })
            .collect();
        notices.sort_unstable();
        notices.dedup();
        if notices.is_empty() {
            return Ok(());
        }
        let stmt = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
        for notice in &notices {
            tx.execute(&stmt, &[&OUTBOX_CHANNEL, notice]).await?;
        }
        Ok(())
    }
}

/// Takes the room locks of every destination in `deliveries`, in ascending order.
async fn lock_rooms<'a>(
    tx: &Transaction<'_>,
    deliveries: impl Iterator<Item = &'a NewDelivery>,
) -> Result<(), StoreError> {
    let mut locks: Vec<i64> = deliveries.map(|d| room_lock(&d.account, &d.room)).collect();
    locks.sort_unstable();
    locks.dedup();
    if locks.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1)")
        .await?;
    for lock in locks {
        tx.execute(&stmt, &[&lock]).await?;
    }
    Ok(())
}

fn info_from(row: &tokio_postgres::Row) -> Result<EventInfo, StoreError> {
    Ok(EventInfo {
        key: key_from(row.try_get(0)?)?,
        account: AccountId::new(row.try_get::<_, String>(1)?),
        sender_name: row.try_get(2)?,
        thread_root: row
            .try_get::<_, Option<Vec<u8>>>(3)?
            .map(key_from)
            .transpose()?,
        sender_id: row.try_get(4)?,
    })
}

/// Records one event and queues its deliveries inside `tx` (whose room locks are taken),
/// unless its remote id is mapped already.
async fn accept_in(
    tx: &Transaction<'_>,
    event: &NewEvent,
    deliveries: &[NewDelivery],
) -> Result<Accepted, StoreError> {
    let now = ms(event.at);
    let key = event.key.to_bytes().to_vec();
    if let Some(remote) = &event.remote_id {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO remote_ids (account, room, remote_id, key, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .await?;
        let inserted = tx
            .execute(
                &stmt,
                &[
                    &event.account.as_str(),
                    &event.room.as_str(),
                    &remote.as_str(),
                    &key,
                    &now,
                ],
            )
            .await?;
        if inserted == 0 {
            return Ok(Accepted::Duplicate);
        }
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO events (key, account, room, sender_name, sender_id, thread_root, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await?;
    let root = event.thread_root.map(|k| k.to_bytes().to_vec());
    tx.execute(
        &stmt,
        &[
            &key,
            &event.account.as_str(),
            &event.room.as_str(),
            &event.sender_name,
            &event.sender_id,
            &root,
            &now,
        ],
    )
    .await?;
    let mut ids = Vec::with_capacity(deliveries.len());
    if deliveries.is_empty() {
        return Ok(Accepted::Stored(ids));
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO outbox (key, account, room, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .await?;
    for d in deliveries {
        let row = tx
            .query_one(
                &stmt,
                &[
                    &key,
                    &d.account.as_str(),
                    &d.room.as_str(),
                    &d.payload,
                    &now,
                ],
            )
            .await?;
        ids.push(row.try_get(0)?);
    }
    Ok(Accepted::Stored(ids))
}

/// Deletes one outbox row and maps the destination's id, inside `tx`.
async fn complete_in(
    tx: &Transaction<'_>,
    outbox_id: i64,
    delivered: Option<&(EventKey, AccountId, RoomId, RemoteMessageId)>,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached("DELETE FROM outbox WHERE id = $1")
        .await?;
    tx.execute(&stmt, &[&outbox_id]).await?;
    if let Some((key, account, room, remote)) = delivered {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO remote_ids (account, room, remote_id, key, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account, room, remote_id) \
                 DO UPDATE SET key = EXCLUDED.key, created_at = EXCLUDED.created_at",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &account.as_str(),
                &room.as_str(),
                &remote.as_str(),
                &key.to_bytes().to_vec(),
                &ms(Timestamp::now()),
            ],
        )
        .await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn accept(
        &self,
        event: NewEvent,
        deliveries: Vec<NewDelivery>,
    ) -> Result<Accepted, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        lock_rooms(&tx, deliveries.iter()).await?;
        let accepted = accept_in(&tx, &event, &deliveries).await?;
        self.announce(&tx, deliveries.iter()).await?;
        tx.commit().await?;
        Ok(accepted)
    }

    async fn accept_many(
        &self,
        events: Vec<(NewEvent, Vec<NewDelivery>)>,
    ) -> Result<Vec<Accepted>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        lock_rooms(&tx, events.iter().flat_map(|(_, d)| d.iter())).await?;
        let mut out = Vec::with_capacity(events.len());
        for (event, deliveries) in &events {
            out.push(accept_in(&tx, event, deliveries).await?);
        }
        self.announce(&tx, events.iter().flat_map(|(_, d)| d.iter()))
            .await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn complete_many(&self, done: Arc<[Completion]>) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        for (outbox_id, delivered) in done.iter() {
            complete_in(&tx, *outbox_id, delivered.as_ref()).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn find_by_remote(
        &self,
        account: &AccountId,
        room: &RoomId,
        remote: &RemoteMessageId,
    ) -> Result<Option<EventInfo>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT e.key, e.account, e.sender_name, e.thread_root, e.sender_id \
                 FROM remote_ids m JOIN events e ON e.key = m.key \
                 WHERE m.account = $1 AND m.room = $2 AND m.remote_id = $3",
            )
            .await?;
        client
            .query_opt(
                &stmt,
                &[&account.as_str(), &room.as_str(), &remote.as_str()],
            )
            .await?
            .as_ref()
            .map(info_from)
            .transpose()
    }

    async fn event_info(&self, key: EventKey) -> Result<Option<EventInfo>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT key, account, sender_name, thread_root, sender_id FROM events WHERE key = $1",
            )
            .await?;
        client
            .query_opt(&stmt, &[&key.to_bytes().to_vec()])
            .await?
            .as_ref()
            .map(info_from)
            .transpose()
    }

    async fn remote_id(
        &self,
        key: EventKey,
        account: &AccountId,
        room: &RoomId,
    ) -> Result<Option<RemoteMessageId>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT remote_id FROM remote_ids WHERE key = $1 AND account = $2 AND room = $3 LIMIT 1",
            )
            .await?;
        let row = client
            .query_opt(
                &stmt,
                &[&key.to_bytes().to_vec(), &account.as_str(), &room.as_str()],
            )
            .await?;
        row.map(|r| r.try_get::<_, String>(0).map(RemoteMessageId::new))
            .transpose()
            .map_err(Into::into)
    }

    async fn pending(
        &self,
        account: &AccountId,
        room: &RoomId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, key, payload, created_at FROM outbox \
                 WHERE account = $1 AND room = $2 AND id > $3 ORDER BY id LIMIT $4",
            )
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&stmt, &[&account.as_str(), &room.as_str(), &after, &limit])
            .await?;
        rows.iter()
            .map(|row| {
                Ok(OutboxEntry {
                    id: row.try_get(0)?,
                    key: key_from(row.try_get(1)?)?,
                    account: account.clone(),
                    room: room.clone(),
                    payload: row.try_get(2)?,
                    queued_at: from_ms(row.try_get(3)?),
                })
            })
            .collect()
    }

    async fn pending_destinations(&self) -> Result<Vec<(AccountId, RoomId)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query("SELECT DISTINCT account, room FROM outbox", &[])
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    AccountId::new(row.try_get::<_, String>(0)?),
                    RoomId::new(row.try_get::<_, String>(1)?),
                ))
            })
            .collect()
    }

    async fn pending_count(&self) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let n: i64 = client
            .query_one("SELECT COUNT(*) FROM outbox", &[])
            .await?
            .try_get(0)?;
        Ok(count(n))
    }

    async fn pending_by_account(&self) -> Result<Vec<(AccountId, u64)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT account, COUNT(*) FROM outbox GROUP BY account ORDER BY account COLLATE \"C\"",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    AccountId::new(row.try_get::<_, String>(0)?),
                    count(row.try_get(1)?),
                ))
            })
            .collect()
    }

    async fn room_counts(&self) -> Result<Vec<RoomCounts>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT account, room, COUNT(*) FILTER (WHERE queued), COUNT(*) FILTER (WHERE NOT queued) \
                 FROM (SELECT account, room, TRUE AS queued FROM outbox \
                       UNION ALL SELECT account, room, FALSE FROM dead_letters) t \
                 GROUP BY account, room ORDER BY account COLLATE \"C\", room COLLATE \"C\"",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(RoomCounts {
                    account: AccountId::new(row.try_get::<_, String>(0)?),
                    room: RoomId::new(row.try_get::<_, String>(1)?),
                    queued: count(row.try_get(2)?),
                    dead: count(row.try_get(3)?),
                })
            })
            .collect()
    }

    async fn complete(
        &self,
        outbox_id: i64,
        delivered: Option<(EventKey, AccountId, RoomId, RemoteMessageId)>,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        complete_in(&tx, outbox_id, delivered.as_ref()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let cutoff = ms(before);
        tx.execute("DELETE FROM remote_ids WHERE created_at < $1", &[&cutoff])
            .await?;
        let removed = tx
            .execute(
                "DELETE FROM events e WHERE e.created_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.key = e.key)",
                &[&cutoff],
            )
            .await?;
        tx.execute(
            "DELETE FROM connector_state WHERE recorded_at < $1",
            &[&cutoff],
        )
        .await?;
        tx.execute("DELETE FROM dead_letters WHERE created_at < $1", &[&cutoff])
            .await?;
        tx.commit().await?;
        Ok(removed)
    }

    async fn state_get(
        &self,
        account: &AccountId,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached("SELECT value FROM connector_state WHERE account = $1 AND key = $2")
            .await?;
        let row = client.query_opt(&stmt, &[&account.as_str(), &key]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn state_put(
        &self,
        account: &AccountId,
        key: &str,
        value: Vec<u8>,
        recorded_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO connector_state (account, key, value, recorded_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (account, key) DO UPDATE SET value = EXCLUDED.value, recorded_at = EXCLUDED.recorded_at",
            )
            .await?;
        let at = recorded_at.map(ms);
        client
            .execute(&stmt, &[&account.as_str(), &key, &value, &at])
            .await?;
        Ok(())
    }

    async fn state_delete(&self, account: &AccountId, key: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached("DELETE FROM connector_state WHERE account = $1 AND key = $2")
            .await?;
        client.execute(&stmt, &[&account.as_str(), &key]).await?;
        Ok(())
    }

    async fn add_dynamic_link(&self, name: &str, rooms: String) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let added = client
            .execute(
                "INSERT INTO dynamic_links (name, rooms, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&name, &rooms, &ms(Timestamp::now())],
            )
            .await?;
        Ok(added == 1)
    }

    async fn dynamic_links(&self) -> Result<Vec<(String, String)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT name, rooms FROM dynamic_links ORDER BY created_at, name COLLATE \"C\"",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    async fn dead_letter(
        &self,
        entry: &OutboxEntry,
        reason: &'static str,
        attempts: u32,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("DELETE FROM outbox WHERE id = $1", &[&entry.id])
            .await?;
        tx.execute(
            "INSERT INTO dead_letters (id, key, account, room, reason, attempts, queued_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET \
             key = EXCLUDED.key, account = EXCLUDED.account, room = EXCLUDED.room, reason = EXCLUDED.reason, \
             attempts = EXCLUDED.attempts, queued_at = EXCLUDED.queued_at, created_at = EXCLUDED.created_at",
            &[
                &entry.id,
                &entry.key.to_bytes().to_vec(),
                &entry.account.as_str(),
                &entry.room.as_str(),
                &reason,
                &i64::from(attempts),
                &ms(entry.queued_at),
                &ms(now),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let client = self.pool.get().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT id, key, account, room, reason, attempts, queued_at, created_at \
                 FROM dead_letters ORDER BY id DESC LIMIT $1",
                &[&limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    id: row.try_get(0)?,
                    key: key_from(row.try_get(1)?)?,
                    account: AccountId::new(row.try_get::<_, String>(2)?),
                    room: RoomId::new(row.try_get::<_, String>(3)?),
                    reason: row.try_get(4)?,
                    attempts: u32::try_from(row.try_get::<_, i64>(5)?).unwrap_or(u32::MAX),
                    queued_at: from_ms(row.try_get(6)?),
                    dead_at: from_ms(row.try_get(7)?),
                })
            })
            .collect()
    }

    async fn paste_put(
        &self,
        id: &str,
        expires_at: Timestamp,
        sealed: Vec<u8>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO pastes (id, expires_at, payload) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at, payload = EXCLUDED.payload",
                &[&id, &ms(expires_at), &sealed],
            )
            .await?;
        Ok(())
    }

    async fn paste_get(&self, id: &str, now: Timestamp) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT payload FROM pastes WHERE id = $1 AND expires_at > $2",
                &[&id, &ms(now)],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn paste_purge(&self, now: Timestamp) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute("DELETE FROM pastes WHERE expires_at <= $1", &[&ms(now)])
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_locks_differ_by_room_and_are_stable() {
        let (a, r1, r2) = (
            AccountId::from("irc.a"),
            RoomId::from("#x"),
            RoomId::from("#y"),
        );
        assert_eq!(room_lock(&a, &r1), room_lock(&a, &r1));
        assert_ne!(room_lock(&a, &r1), room_lock(&a, &r2));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            room_lock(&"ab".into(), &"c".into()),
            room_lock(&"a".into(), &"bc".into())
        );
    }

    #[test]
    fn a_url_is_described_without_its_password() {
        let config: tokio_postgres::Config =
            "postgres://bridge:hunter2@db.example.org:6432/passerelle"
                .parse()
                .unwrap();
        let described = describe(&config);
        assert_eq!(described, "bridge@db.example.org:6432/passerelle");
        assert!(!described.contains("hunter2"));
    }
}
