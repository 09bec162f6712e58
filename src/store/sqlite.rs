//! The embedded SQLite store (rusqlite, bundled SQLite, WAL). Numbered migrations live in
//! `migrations/` and are applied in order, tracked by `PRAGMA user_version`.

use super::{
    Accepted, Completion, EventInfo, NewDelivery, NewEvent, OutboxEntry, Store, StoreError,
};
use async_trait::async_trait;
use passerelle_sdk::DeadLetter;
use passerelle_sdk::{AccountId, EventKey, RemoteMessageId, RoomId, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The migrations, in order; entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_dynamic_links.sql"),
    include_str!("migrations/0003_state_records.sql"),
    include_str!("migrations/0004_pastes.sql"),
    include_str!("migrations/0005_dead_letters.sql"),
    include_str!("migrations/0006_event_authors.sql"),
];

/// A store in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Keeps the checkpointer running; it stops when the last clone is dropped.
    _checkpointer: Option<Arc<std::sync::mpsc::Sender<()>>>,
    /// The lock on `PATH.lock` the daemon holds (see [`SqliteStore::open_locked`]).
    _lock: Option<Arc<std::fs::File>>,
}

/// The lock file beside a database: `passerelle.db.lock` for `passerelle.db`.
pub fn lock_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    std::path::PathBuf::from(name)
}

/// How often the checkpointer copies the write-ahead log into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Checkpoints the write-ahead log from its own connection and thread, so the writes on the
/// bridging path never wait for a checkpoint's copy and `fsync` (SQLite's automatic checkpoint
/// runs inside the commit that crosses its threshold: a stall of tens of milliseconds on this
/// machine's disk). A passive checkpoint never blocks the writer.
fn start_checkpointer(path: &Path) -> Result<std::sync::mpsc::Sender<()>, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("passerelle-checkpoint".into())
        .spawn(move || {
            loop {
                let last = matches!(
                    rx.recv_timeout(CHECKPOINT_EVERY),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
                );
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "store checkpoint failed; trying again");
                }
                if last {
                    return;
                }
            }
        })
        .map_err(|e| StoreError::Database(format!("starting the checkpointer: {e}")))?;
    Ok(tx)
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Database(format!("{}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)?;
        let mut store = Self::init(conn)?;
        store
            .conn
            .lock()
            .map_err(|_| StoreError::Database("store lock poisoned".into()))?
            .pragma_update(None, "wal_autocheckpoint", 0)?;
        store._checkpointer = Some(Arc::new(start_checkpointer(path)?));
        Ok(store)
    }

    /// [`SqliteStore::open`], holding an exclusive lock on `PATH.lock` for as long as the store
    /// lives: a second daemon, or `migrate-store`, on the same file is refused while one holds
    /// it (the operating system releases it when the process ends, however it ends).
    pub fn open_locked(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Database(format!("{}: {e}", dir.display())))?;
        }
        let lock_file = lock_path(path);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_file)
            .map_err(|e| StoreError::Database(format!("{}: {e}", lock_file.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Database(format!(
                    "another passerelle has it open (it holds {}): stop it first",
                    lock_file.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Database(format!(
                    "{}: {e}",
                    lock_file.display()
                )));
            }
        }
        let mut store = Self::open(path)?;
        store._lock = Some(Arc::new(file));
        Ok(store)
    }

    /// Runs `f` in one read transaction: every query in it sees the same snapshot.
    pub(crate) fn read_snapshot<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| "store lock poisoned".to_owned())?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)
            .map_err(|e| e.to_string())?;
        let out = f(&tx)?;
        tx.rollback().map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// A private in-memory database (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk before it returns, so what was acknowledged (a webhook
        // answered 200, an update offset confirmed) survives a power cut, not only a crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            _checkpointer: None,
            _lock: None,
        })
    }

    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Database("store lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Database(format!("store task failed: {e}")))?
    }
}

fn key_bytes(key: EventKey) -> Vec<u8> {
    key.to_bytes().to_vec()
}

fn key_from(bytes: Vec<u8>) -> Result<EventKey, StoreError> {
    let array: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Database("malformed event key in store".into()))?;
    Ok(EventKey::from_bytes(array))
}

/// An `events` row as read: key, account, sender name, thread root, sender id.
type InfoRow = (Vec<u8>, String, String, Option<Vec<u8>>, Option<String>);

fn info_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<InfoRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn to_info(raw: InfoRow) -> Result<EventInfo, StoreError> {
    Ok(EventInfo {
        key: key_from(raw.0)?,
        account: AccountId::new(raw.1),
        sender_name: raw.2,
        thread_root: raw.3.map(key_from).transpose()?,
        sender_id: raw.4,
    })
}

/// Records one event and queues its deliveries inside `tx`, unless its remote id is mapped already.
fn accept_in(
    tx: &rusqlite::Transaction<'_>,
    event: &NewEvent,
    deliveries: &[NewDelivery],
) -> Result<Accepted, StoreError> {
    let now = event.at.0 as i64;
    let key = key_bytes(event.key);
    if let Some(remote) = &event.remote_id {
        let inserted = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO remote_ids (account, room, remote_id, key, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![event.account.as_str(), event.room.as_str(), remote.as_str(), key, now])?;
        if inserted == 0 {
            return Ok(Accepted::Duplicate);
        }
    }
    tx.prepare_cached(
        "INSERT INTO events (key, account, room, sender_name, sender_id, thread_root, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        key,
        event.account.as_str(),
        event.room.as_str(),
        event.sender_name,
        event.sender_id,
        event.thread_root.map(key_bytes),
        now
    ])?;
    let mut ids = Vec::with_capacity(deliveries.len());
    let mut insert = tx.prepare_cached(
        "INSERT INTO outbox (key, account, room, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for d in deliveries {
        insert.execute(params![
            key,
            d.account.as_str(),
            d.room.as_str(),
            d.payload,
            now
        ])?;
        ids.push(tx.last_insert_rowid());
    }
    Ok(Accepted::Stored(ids))
}

/// Deletes one outbox row and maps the destination's id, inside `tx`.
fn complete_in(
    tx: &rusqlite::Transaction<'_>,
    outbox_id: i64,
    delivered: Option<&(EventKey, AccountId, RoomId, RemoteMessageId)>,
) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?
        .execute(params![outbox_id])?;
    if let Some((key, account, room, remote)) = delivered {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO remote_ids (account, room, remote_id, key, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![account.as_str(), room.as_str(), remote.as_str(), key_bytes(*key), Timestamp::now().0 as i64])?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn accept(
        &self,
        event: NewEvent,
        deliveries: Vec<NewDelivery>,
    ) -> Result<Accepted, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let accepted = accept_in(&tx, &event, &deliveries)?;
            tx.commit()?;
            Ok(accepted)
        })
        .await
    }

    async fn accept_many(
        &self,
        events: Vec<(NewEvent, Vec<NewDelivery>)>,
    ) -> Result<Vec<Accepted>, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let mut out = Vec::with_capacity(events.len());
            for (event, deliveries) in &events {
                out.push(accept_in(&tx, event, deliveries)?);
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn complete_many(&self, done: Arc<[Completion]>) -> Result<(), StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            for (outbox_id, delivered) in done.iter() {
                complete_in(&tx, *outbox_id, delivered.as_ref())?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn find_by_remote(
        &self,
        account: &AccountId,
        room: &RoomId,
        remote: &RemoteMessageId,
    ) -> Result<Option<EventInfo>, StoreError> {
        let (a, r, m) = (account.clone(), room.clone(), remote.clone());
        self.with(move |conn| {
            conn.prepare_cached(
                "SELECT e.key, e.account, e.sender_name, e.thread_root, e.sender_id FROM remote_ids m JOIN events e ON e.key = m.key
                 WHERE m.account = ?1 AND m.room = ?2 AND m.remote_id = ?3",
            )?
            .query_row(params![a.as_str(), r.as_str(), m.as_str()], info_from_row)
            .optional()?
            .map(to_info)
            .transpose()
        })
        .await
    }

    async fn event_info(&self, key: EventKey) -> Result<Option<EventInfo>, StoreError> {
        self.with(move |conn| {
            conn.prepare_cached(
                "SELECT key, account, sender_name, thread_root, sender_id FROM events WHERE key = ?1",
            )?
            .query_row(params![key_bytes(key)], info_from_row)
            .optional()?
            .map(to_info)
            .transpose()
        })
        .await
    }

    async fn remote_id(
        &self,
        key: EventKey,
        account: &AccountId,
        room: &RoomId,
    ) -> Result<Option<RemoteMessageId>, StoreError> {
        let (a, r) = (account.clone(), room.clone());
        self.with(move |conn| {
            let id: Option<String> = conn
                .prepare_cached("SELECT remote_id FROM remote_ids WHERE key = ?1 AND account = ?2 AND room = ?3 LIMIT 1")?
                .query_row(params![key_bytes(key), a.as_str(), r.as_str()], |row| row.get(0))
                .optional()?;
            Ok(id.map(RemoteMessageId::new))
        })
        .await
    }

    async fn pending(
        &self,
        account: &AccountId,
        room: &RoomId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let (a, r) = (account.clone(), room.clone());
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, key, payload, created_at FROM outbox WHERE account = ?1 AND room = ?2 AND id > ?3 ORDER BY id LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![a.as_str(), r.as_str(), after, limit as i64], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, key, payload, queued_at) = row?;
                out.push(OutboxEntry {
                    id,
                    key: key_from(key)?,
                    account: a.clone(),
                    room: r.clone(),
                    payload,
                    queued_at: Timestamp(queued_at.max(0) as u64),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn pending_destinations(&self) -> Result<Vec<(AccountId, RoomId)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached("SELECT DISTINCT account, room FROM outbox")?;
            let rows = stmt.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (a, r) = row?;
                out.push((AccountId::new(a), RoomId::new(r)));
            }
            Ok(out)
        })
        .await
    }

    async fn pending_by_account(&self) -> Result<Vec<(AccountId, u64)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT account, COUNT(*) FROM outbox GROUP BY account ORDER BY account",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (a, n) = row?;
                out.push((AccountId::new(a), n as u64));
            }
            Ok(out)
        })
        .await
    }

    async fn room_counts(&self) -> Result<Vec<super::RoomCounts>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT account, room, SUM(queued), SUM(dead) FROM (\
                   SELECT account, room, 1 AS queued, 0 AS dead FROM outbox \
                   UNION ALL SELECT account, room, 0, 1 FROM dead_letters\
                 ) GROUP BY account, room ORDER BY account, room",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (account, room, queued, dead) = row?;
                out.push(super::RoomCounts {
                    account: AccountId::new(account),
                    room: RoomId::new(room),
                    queued: queued.max(0) as u64,
                    dead: dead.max(0) as u64,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn pending_count(&self) -> Result<u64, StoreError> {
        self.with(|conn| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM outbox", [], |row| row.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn complete(
        &self,
        outbox_id: i64,
        delivered: Option<(EventKey, AccountId, RoomId, RemoteMessageId)>,
    ) -> Result<(), StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            complete_in(&tx, outbox_id, delivered.as_ref())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let cutoff = before.0 as i64;
            tx.execute(
                "DELETE FROM remote_ids WHERE created_at < ?1",
                params![cutoff],
            )?;
            let removed = tx.execute(
                "DELETE FROM events WHERE created_at < ?1 AND key NOT IN (SELECT key FROM outbox)",
                params![cutoff],
            )?;
            tx.execute(
                "DELETE FROM connector_state WHERE recorded_at < ?1",
                params![cutoff],
            )?;
            tx.execute(
                "DELETE FROM dead_letters WHERE created_at < ?1",
                params![cutoff],
            )?;
            tx.commit()?;
            Ok(removed as u64)
        })
        .await
    }

    async fn state_get(
        &self,
        account: &AccountId,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (a, k) = (account.clone(), key.to_owned());
        self.with(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT value FROM connector_state WHERE account = ?1 AND key = ?2",
                )?
                .query_row(params![a.as_str(), k], |row| row.get(0))
                .optional()?)
        })
        .await
    }

    async fn state_put(
        &self,
        account: &AccountId,
        key: &str,
        value: Vec<u8>,
        recorded_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let (a, k) = (account.clone(), key.to_owned());
        let at = recorded_at.map(|t| t.0 as i64);
        self.with(move |conn| {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO connector_state (account, key, value, recorded_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![a.as_str(), k, value, at])?;
            Ok(())
        })
        .await
    }

    async fn state_delete(&self, account: &AccountId, key: &str) -> Result<(), StoreError> {
        let (a, k) = (account.clone(), key.to_owned());
        self.with(move |conn| {
            conn.prepare_cached("DELETE FROM connector_state WHERE account = ?1 AND key = ?2")?
                .execute(params![a.as_str(), k])?;
            Ok(())
        })
        .await
    }

    async fn add_dynamic_link(&self, name: &str, rooms: String) -> Result<bool, StoreError> {
        let name = name.to_owned();
        let now = Timestamp::now().0 as i64;
        self.with(move |conn| {
            let added = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO dynamic_links (name, rooms, created_at) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![name, rooms, now])?;
            Ok(added == 1)
        })
        .await
    }

    async fn dead_letter(
        &self,
        entry: &OutboxEntry,
        reason: &'static str,
        attempts: u32,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (id, key) = (entry.id, key_bytes(entry.key));
        let (account, room, queued) = (entry.account.clone(), entry.room.clone(), entry.queued_at);
        self.with(move |conn| {
            let tx = conn.transaction()?;
            tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?
                .execute(params![id])?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO dead_letters (id, key, account, room, reason, attempts, queued_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                id,
                key,
                account.as_str(),
                room.as_str(),
                reason,
                i64::from(attempts),
                queued.0 as i64,
                now.0 as i64
            ])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, key, account, room, reason, attempts, queued_at, created_at FROM dead_letters ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![limit as i64], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, i64>(5)?,
                    row.get::<_, i64>(6)?,
                    row.get::<_, i64>(7)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, key, account, room, reason, attempts, queued, dead) = row?;
                out.push(DeadLetter {
                    id,
                    key: key_from(key)?,
                    account: AccountId::new(account),
                    room: RoomId::new(room),
                    reason,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    queued_at: Timestamp(queued.max(0) as u64),
                    dead_at: Timestamp(dead.max(0) as u64),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn paste_put(
        &self,
        id: &str,
        expires_at: Timestamp,
        sealed: Vec<u8>,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with(move |conn| {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO pastes (id, expires_at, payload) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![id, expires_at.0 as i64, sealed])?;
            Ok(())
        })
        .await
    }

    async fn paste_get(&self, id: &str, now: Timestamp) -> Result<Option<Vec<u8>>, StoreError> {
        let id = id.to_owned();
        self.with(move |conn| {
            Ok(conn
                .prepare_cached("SELECT payload FROM pastes WHERE id = ?1 AND expires_at > ?2")?
                .query_row(params![id, now.0 as i64], |row| row.get(0))
                .optional()?)
        })
        .await
    }

    async fn paste_purge(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.with(move |conn| {
            let removed = conn
                .prepare_cached("DELETE FROM pastes WHERE expires_at <= ?1")?
                .execute(params![now.0 as i64])?;
            Ok(removed as u64)
        })
        .await
    }

    async fn dynamic_links(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, rooms FROM dynamic_links ORDER BY created_at, name",
            )?;
            let rows = stmt
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<Vec<(String, String)>, _>>()?;
            Ok(rows)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::store_conformance!(SqliteStore::in_memory().expect("in-memory store"));

    /// What is acknowledged is on disk: every commit waits for its fsync (`synchronous = FULL`,
    /// 2), in WAL mode, on a real file.
    #[test]
    fn commits_are_durable_before_they_return() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("p.db")).unwrap();
        let conn = store.conn.lock().unwrap();
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!((sync, mode.as_str()), (2, "wal"));
    }

    #[tokio::test]
    async fn connectors_reach_their_state_through_the_sdk_handle() {
        let store: std::sync::Arc<dyn Store> =
            std::sync::Arc::new(SqliteStore::in_memory().unwrap());
        let backend = std::sync::Arc::new(crate::store::StoreState(store.clone()));
        let mine = passerelle_sdk::StateHandle::new("irc.a".into(), backend.clone());
        let theirs = passerelle_sdk::StateHandle::new("irc.b".into(), backend);
        mine.put("offset", b"41".to_vec()).await.unwrap();
        mine.put("offset", b"42".to_vec()).await.unwrap();
        assert_eq!(mine.get("offset").await.unwrap(), Some(b"42".to_vec()));
        assert_eq!(
            theirs.get("offset").await.unwrap(),
            None,
            "state leaked across accounts"
        );
        mine.delete("offset").await.unwrap();
        assert_eq!(mine.get("offset").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_file_store_survives_reopening_and_refuses_newer_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let key = EventKey::new();
        {
            let store = SqliteStore::open(&path).unwrap();
            let event = crate::store::conformance::new_event(key, "a", "r", Some("m1"));
            store.accept(event, vec![]).await.unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let info = store
            .find_by_remote(&"a".into(), &"r".into(), &"m1".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.key, key);
        drop(store);
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}
