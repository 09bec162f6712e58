-- Links made at run time (Matrix portal rooms opened through an alias): kept across restarts and
-- merged with the configured links at start. `rooms` is a JSON list of {account, room}.
CREATE TABLE dynamic_links (
    name         TEXT PRIMARY KEY,
    rooms        TEXT NOT NULL,
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;
