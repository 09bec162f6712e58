-- Deliveries given up on (too many attempts, or queued too long): ids, destination and why,
-- never the payload. Listed by /dead-letters and the Matrix admin room; purged with the map.
CREATE TABLE dead_letters (
    id           INTEGER PRIMARY KEY,       -- the outbox row's id
    key          BLOB NOT NULL,             -- the event
    account      TEXT NOT NULL,             -- destination account
    room         TEXT NOT NULL,             -- destination room
    reason       TEXT NOT NULL,             -- max_attempts, max_age
    attempts     INTEGER NOT NULL,
    queued_at    INTEGER NOT NULL,          -- ms since epoch
    created_at   INTEGER NOT NULL           -- when it was given up on, for retention
);
CREATE INDEX dead_letters_by_age ON dead_letters(created_at);
