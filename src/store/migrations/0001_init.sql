-- passerelle store, version 1. Ids and mapping only: no message text is ever stored in clear.

-- One row per bridged event: its core key and where it came from.
CREATE TABLE events (
    key          BLOB PRIMARY KEY,          -- EventKey, 16 bytes (UUIDv7)
    account      TEXT NOT NULL,             -- origin account
    room         TEXT NOT NULL,             -- origin room
    sender_name  TEXT NOT NULL,             -- shown in quoted-reply fallbacks ("re alice")
    thread_root  BLOB,                      -- EventKey of the thread's first message
    created_at   INTEGER NOT NULL           -- ms since epoch, for retention
) WITHOUT ROWID;
CREATE INDEX events_by_age ON events(created_at);

-- The id each event has on each account it reached (or came from).
CREATE TABLE remote_ids (
    account      TEXT NOT NULL,
    room         TEXT NOT NULL,
    remote_id    TEXT NOT NULL,
    key          BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (account, room, remote_id)
) WITHOUT ROWID;
CREATE INDEX remote_ids_by_key ON remote_ids(key, account, room);
CREATE INDEX remote_ids_by_age ON remote_ids(created_at);

-- Events waiting for delivery to one destination room; payload is sealed (encrypted), and the row
-- is deleted on delivery.
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    key          BLOB NOT NULL,
    account      TEXT NOT NULL,             -- destination account
    room         TEXT NOT NULL,             -- destination room
    payload      BLOB NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX outbox_by_destination ON outbox(account, room, id);

-- Connector-private state.
CREATE TABLE connector_state (
    account      TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        BLOB NOT NULL,
    PRIMARY KEY (account, key)
) WITHOUT ROWID;
