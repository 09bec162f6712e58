-- Version 4: each account's data directory (a Matrix account's session and matrix-sdk's SQLite
-- stores, a media link key), copied by the account's owner as it changes, fenced by the lease,
-- and put in place by the next owner before the account starts there. One row per account: the
-- latest copy, sealed (the outbox key).
CREATE TABLE account_files (
    account     TEXT PRIMARY KEY,
    epoch       BIGINT NOT NULL,           -- the lease's epoch under which it was written
    written_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sealed      BYTEA NOT NULL             -- the archive of the directory, encrypted
);
