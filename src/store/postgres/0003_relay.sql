-- Version 3: callbacks kept for another instance. A webhook or an appservice transaction that
-- reaches any instance is proved there and kept here, sealed (the outbox key), until the
-- account's owner has handed it to its connector; then it is deleted.
CREATE TABLE relayed (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account      TEXT NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sealed       BYTEA NOT NULL             -- method, path, headers and body, encrypted
);
CREATE INDEX relayed_by_account ON relayed (account, id);
