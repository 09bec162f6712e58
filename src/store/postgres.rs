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
    include_str!("postgres/0003_relay.sql"),
    include_str!("postgres/0004_account_files.sql"),
];

/// The server ends a session idle inside a transaction for this long (see `connect`).
const IDLE_IN_TRANSACTION: &str = "-c idle_in_transaction_session_timeout=5000";

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
    /// TLS for every connection, used when the URL says `sslmode=require`.
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

/// A connection of its own that listens on [`OUTBOX_CHANNEL`]; the notices arrive on
/// `notices` until the connection ends (then the channel closes).
pub struct Listener {
    /// Kept for the connection to live.
    pub client: tokio_postgres::Client,
    /// Each notice: its channel ([`OUTBOX_CHANNEL`] or [`RELAY_CHANNEL`]) and payload.
    pub notices: tokio::sync::mpsc::Receiver<(String, String)>,
}

/// The channel on which a kept callback is announced to the account's owner:
/// `OWNER\x1fACCOUNT`, OWNER the instance that kept it.
pub const RELAY_CHANNEL: &str = "passerelle_relay";

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
        Self::connect_with(url, pool_size, None).await
    }

    /// [`PostgresStore::connect`], trusting the CA certificates in `tls_ca_file` besides the
    /// Mozilla roots for the server's certificate. TLS is used when the URL says
    /// `sslmode=require` (then the certificate and the host name are checked, and a server
    /// without TLS is refused); `prefer` or no `sslmode` means no TLS, as `disable`, since a TLS
    /// that falls back to plain text unasked protects nothing.
    pub async fn connect_with(
        url: &str,
        pool_size: usize,
        tls_ca_file: Option<&std::path::Path>,
    ) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Database(format!("not a PostgreSQL URL: {e}")))?;
        if config.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        let client_config = passerelle_sdk::tls::client_config(tls_ca_file)
            .map_err(|e| StoreError::Database(format!("store.tls_ca_file: {e}")))?;
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*client_config).clone());
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("passerelle");
        }
        // A client that stops in the middle of a transaction (a paused or cut-off instance) must
        // not hold its row locks for ever: the server ends such a session after a few seconds,
        // and the instance taking over is not blocked behind it. Our transactions never wait
        // between statements for anything but the database.
        let options = match config.get_options() {
            Some(given) if given.contains("idle_in_transaction_session_timeout") => {
                given.to_owned()
            }
            Some(given) => format!("{given} {IDLE_IN_TRANSACTION}"),
            None => IDLE_IN_TRANSACTION.to_owned(),
        };
        config.options(&options);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
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
            tls,
        };
        // A certificate refused for want of its CA: say which key trusts one.
        let hint = |msg: &str| {
            if msg.contains("UnknownIssuer") && tls_ca_file.is_none() {
                " (a private CA signed it: name its certificate in store.tls_ca_file)"
            } else {
                ""
            }
        };
        store.migrate().await.map_err(|e| match e {
            StoreError::Database(msg) => {
                StoreError::Database(format!("{}: {msg}{}", describe(&config), hint(&msg)))
            }
            StoreError::Unavailable(msg) => {
                StoreError::Unavailable(format!("{}: {msg}{}", describe(&config), hint(&msg)))
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
        tls_ca_file: Option<&std::path::Path>,
        patience: Duration,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Self, StoreError> {
        let started = std::time::Instant::now();
        let mut wait = Duration::from_millis(500);
        loop {
            match Self::connect_with(url, pool_size, tls_ca_file).await {
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
        let known = SCHEMA_VERSION;
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

    /// Opens a connection that listens on [`OUTBOX_CHANNEL`] and [`RELAY_CHANNEL`].
    pub async fn listen(&self) -> Result<Listener, StoreError> {
        let (client, mut connection) = self.config.connect(self.tls.clone()).await?;
        let (tx, notices) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
                match message {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                        // A full queue drops the notice: the owner's sweep finds the row.
                        let _ = tx.try_send((n.channel().to_owned(), n.payload().to_owned()));
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
            .batch_execute(&format!("LISTEN {OUTBOX_CHANNEL}; LISTEN {RELAY_CHANNEL}"))
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

mod queries;
mod relay;

#[cfg(test)]
mod tests {
    use super::queries::room_lock;
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
