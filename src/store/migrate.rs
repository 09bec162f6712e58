//! `passerelle migrate-store`: copies an installation's SQLite store (the message map, the
//! outbox with its sealed payloads and ids, connector state, links, pastes and dead letters) into
//! an empty PostgreSQL store, in one transaction, and checks every table's row count before it
//! commits. The daemon must be stopped: the copy takes the SQLite file's lock, as the daemon
//! does, and refuses to start while a daemon holds it.

use super::StoreError;
use super::postgres::PostgresStore;
use super::sqlite;
use std::path::Path;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

/// A column's type, in both databases.
#[derive(Clone, Copy)]
enum Kind {
    Bytes,
    Text,
    Int,
}

impl Kind {
    fn pg(self) -> Type {
        match self {
            Kind::Bytes => Type::BYTEA,
            Kind::Text => Type::TEXT,
            Kind::Int => Type::INT8,
        }
    }
}

/// A table of the store, as both schemas name it (SQLite version 6, PostgreSQL version 1).
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// Its primary key, to read in a stable order.
    order: &'static str,
}

const TABLES: &[Table] = &[
    Table {
        name: "events",
        columns: &[
            ("key", Kind::Bytes),
            ("account", Kind::Text),
            ("room", Kind::Text),
            ("sender_name", Kind::Text),
            ("sender_id", Kind::Text),
            ("thread_root", Kind::Bytes),
            ("created_at", Kind::Int),
        ],
        order: "key",
    },
    Table {
        name: "remote_ids",
        columns: &[
            ("account", Kind::Text),
            ("room", Kind::Text),
            ("remote_id", Kind::Text),
            ("key", Kind::Bytes),
            ("created_at", Kind::Int),
        ],
        order: "account, room, remote_id",
    },
    Table {
        name: "outbox",
        columns: &[
            ("id", Kind::Int),
            ("key", Kind::Bytes),
            ("account", Kind::Text),
            ("room", Kind::Text),
            ("payload", Kind::Bytes),
            ("created_at", Kind::Int),
        ],
        order: "id",
    },
    Table {
        name: "connector_state",
        columns: &[
            ("account", Kind::Text),
            ("key", Kind::Text),
            ("value", Kind::Bytes),
            ("recorded_at", Kind::Int),
        ],
        order: "account, key",
    },
    Table {
        name: "dynamic_links",
        columns: &[
            ("name", Kind::Text),
            ("rooms", Kind::Text),
            ("created_at", Kind::Int),
        ],
        order: "name",
    },
    Table {
        name: "pastes",
        columns: &[
            ("id", Kind::Text),
            ("expires_at", Kind::Int),
            ("payload", Kind::Bytes),
        ],
        order: "id",
    },
    Table {
        name: "dead_letters",
        columns: &[
            ("id", Kind::Int),
            ("key", Kind::Bytes),
            ("account", Kind::Text),
            ("room", Kind::Text),
            ("reason", Kind::Text),
            ("attempts", Kind::Int),
            ("queued_at", Kind::Int),
            ("created_at", Kind::Int),
        ],
        order: "id",
    },
];

/// One value read from SQLite.
enum Value {
    Bytes(Option<Vec<u8>>),
    Text(Option<String>),
    Int(Option<i64>),
}

impl Value {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Value::Bytes(v) => v,
            Value::Text(v) => v,
            Value::Int(v) => v,
        }
    }
}

/// What the reader thread sends: the rows of one table, in batches, then its end.
enum Batch {
    Rows(Vec<Vec<Value>>),
    End,
}

/// Rows sent to the writer at once; at most [`QUEUED_BATCHES`] batches wait in memory.
const BATCH_ROWS: usize = 1_000;
const QUEUED_BATCHES: usize = 4;

/// How many rows each table held (and now holds at the destination).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copied {
    /// `(table, rows)` in copy order.
    pub tables: Vec<(&'static str, u64)>,
    /// The next outbox id the destination gives.
    pub next_outbox_id: i64,
}

/// Why the copy did not happen. Nothing was written to the destination in any case.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The SQLite file cannot be used.
    #[error("--from {path}: {why}")]
    Source {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The PostgreSQL database cannot be used.
    #[error("--to: {0}")]
    Destination(String),
    /// A table's count at the destination is not the source's (the transaction was rolled back).
    #[error(
        "{table}: {copied} rows at the destination, {source_rows} in the source: nothing was kept"
    )]
    Mismatch {
        /// The table.
        table: &'static str,
        /// Rows at the destination.
        copied: u64,
        /// Rows in the source.
        source_rows: u64,
    },
}

/// Copies the SQLite store at `source` into `destination` (which must hold no row yet), in
/// one transaction, and returns every table's count, each checked against the source's.
pub async fn sqlite_to_postgres(
    source: &Path,
    destination: &PostgresStore,
) -> Result<Copied, MigrateError> {
    let source_err = |why: String| MigrateError::Source {
        path: source.display().to_string(),
        why,
    };
    if !source.is_file() {
        return Err(source_err("no such file".into()));
    }
    // Brings an older file to this version's schema, and holds the daemon's lock for the copy.
    let store = sqlite::SqliteStore::open_locked(source).map_err(|e| source_err(e.to_string()))?;

    let mut client = destination
        .pool()
        .get()
        .await
        .map_err(|e| MigrateError::Destination(StoreError::from(e).to_string()))?;
    let dest =
        |e: tokio_postgres::Error| MigrateError::Destination(StoreError::from(e).to_string());
    let tx = client.transaction().await.map_err(dest)?;
    // Nothing else may write while the copy runs (a daemon started on the destination early).
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE NOWAIT",
        names.join(", ")
    ))
    .await
    .map_err(|e| {
        MigrateError::Destination(format!(
            "the store is in use ({}): stop the daemons that use it",
            StoreError::from(e)
        ))
    })?;
    for table in TABLES {
        let row = tx
            .query_one(&format!("SELECT count(*) FROM {}", table.name), &[])
            .await
            .map_err(dest)?;
        let rows: i64 = row.try_get(0).map_err(dest)?;
        if rows > 0 {
            return Err(MigrateError::Destination(format!(
                "the store is not empty ({} holds {rows} rows): migrate-store only fills a new one",
                table.name
            )));
        }
    }

    let (tx_rows, mut batches) =
        tokio::sync::mpsc::channel::<Result<Batch, String>>(QUEUED_BATCHES);
    let reader = {
        let store = store.clone();
        std::thread::Builder::new()
            .name("passerelle-migrate-read".into())
            .spawn(move || read_all(&store, &tx_rows))
            .map_err(|e| source_err(format!("starting the reader: {e}")))?
    };

    let mut copied = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let columns: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
        let types: Vec<Type> = table.columns.iter().map(|c| c.1.pg()).collect();
        let sink = tx
            .copy_in(&format!(
                "COPY {} ({}) FROM STDIN BINARY",
                table.name,
                columns.join(", ")
            ))
            .await
            .map_err(dest)?;
        let writer = BinaryCopyInWriter::new(sink, &types);
        let mut writer = std::pin::pin!(writer);
        loop {
            match batches.recv().await {
                Some(Ok(Batch::Rows(rows))) => {
                    for row in &rows {
                        let values: Vec<&(dyn ToSql + Sync)> =
                            row.iter().map(Value::as_sql).collect();
                        writer.as_mut().write(&values).await.map_err(dest)?;
                    }
                }
                Some(Ok(Batch::End)) => break,
                Some(Err(why)) => return Err(source_err(why)),
                None => return Err(source_err("the reader stopped early".into())),
            }
        }
        let written = writer.finish().await.map_err(dest)?;
        copied.push((table.name, written));
    }
    let counts = match reader.join() {
        Ok(Ok(counts)) => counts,
        Ok(Err(why)) => return Err(source_err(why)),
        Err(_) => return Err(source_err("the reader failed".into())),
    };

    // Every table as it now stands at the destination, against the source's count.
    for (table, source_rows) in TABLES.iter().zip(&counts.rows) {
        let row = tx
            .query_one(&format!("SELECT count(*) FROM {}", table.name), &[])
            .await
            .map_err(dest)?;
        let at_destination: i64 = row.try_get(0).map_err(dest)?;
        if at_destination as u64 != *source_rows {
            return Err(MigrateError::Mismatch {
                table: table.name,
                copied: at_destination as u64,
                source_rows: *source_rows,
            });
        }
    }
    // The outbox gives ids after every id the source ever gave (dead letters keep theirs).
    let next_outbox_id = counts.last_outbox_id + 1;
    if counts.last_outbox_id > 0 {
        tx.execute(
            "SELECT setval(pg_get_serial_sequence('outbox', 'id'), $1)",
            &[&counts.last_outbox_id],
        )
        .await
        .map_err(dest)?;
    }
    tx.commit().await.map_err(dest)?;
    drop(store);
    Ok(Copied {
        tables: copied,
        next_outbox_id,
    })
}

/// What the reader counted in its snapshot.
struct SourceCounts {
    rows: Vec<u64>,
    last_outbox_id: i64,
}

/// Reads every table in one read transaction (one snapshot) and sends its rows in batches.
fn read_all(
    store: &sqlite::SqliteStore,
    out: &tokio::sync::mpsc::Sender<Result<Batch, String>>,
) -> Result<SourceCounts, String> {
    let result = store.read_snapshot(|conn| {
        let mut rows = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            rows.push(read_table(conn, table, out)?);
        }
        // The highest id the outbox ever gave: its AUTOINCREMENT counter, or a dead letter's.
        let counter: i64 = conn
            .query_row(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)",
                [],
                |r| r.get(0),
            )
            .map_err(|e| format!("sqlite_sequence: {e}"))?;
        let highest: i64 = conn
            .query_row(
                "SELECT max(coalesce((SELECT max(id) FROM outbox), 0), \
                 coalesce((SELECT max(id) FROM dead_letters), 0))",
                [],
                |r| r.get(0),
            )
            .map_err(|e| format!("outbox ids: {e}"))?;
        Ok(SourceCounts {
            rows,
            last_outbox_id: counter.max(highest),
        })
    });
    if let Err(why) = &result {
        // The writer is waiting for rows: tell it why none come (it may have gone already).
        let _ = out.blocking_send(Err(why.clone()));
    }
    result
}

fn read_table(
    conn: &rusqlite::Connection,
    table: &Table,
    out: &tokio::sync::mpsc::Sender<Result<Batch, String>>,
) -> Result<u64, String> {
    let columns: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {}",
        columns.join(", "),
        table.name,
        table.order
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(|e| format!("{}: {e}", table.name))?;
    let mut rows = stmt.query([]).map_err(|e| format!("{}: {e}", table.name))?;
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    let mut count = 0u64;
    let gone = || "the writer stopped".to_owned();
    while let Some(row) = rows.next().map_err(|e| format!("{}: {e}", table.name))? {
        let mut values = Vec::with_capacity(table.columns.len());
        for (i, (column, kind)) in table.columns.iter().enumerate() {
            let bad =
                |e: rusqlite::Error| format!("{}.{column}, row {}: {e}", table.name, count + 1);
            values.push(match kind {
                Kind::Bytes => Value::Bytes(row.get(i).map_err(bad)?),
                Kind::Text => Value::Text(row.get(i).map_err(bad)?),
                Kind::Int => Value::Int(row.get(i).map_err(bad)?),
            });
        }
        batch.push(values);
        count += 1;
        if batch.len() == BATCH_ROWS {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
            out.blocking_send(Ok(Batch::Rows(full)))
                .map_err(|_| gone())?;
        }
    }
    if !batch.is_empty() {
        out.blocking_send(Ok(Batch::Rows(batch)))
            .map_err(|_| gone())?;
    }
    out.blocking_send(Ok(Batch::End)).map_err(|_| gone())?;
    Ok(count)
}
