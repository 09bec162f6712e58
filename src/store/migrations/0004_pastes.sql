-- Whole texts of messages cut to a destination's lines, readable through a signed link until
-- they expire. The text is sealed (as outbox payloads are); rows are deleted when they expire.
CREATE TABLE pastes (
    id TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX pastes_expiry ON pastes (expires_at);
