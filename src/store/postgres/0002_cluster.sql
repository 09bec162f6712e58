-- Version 2: cluster mode. Several daemons share the accounts; each account is owned by one
-- instance at a time through its lease. Times are the database's (now()), so the instances'
-- clocks need not agree.

-- The instances alive: each renews its row with its leases; one not renewed is gone.
CREATE TABLE cluster_instances (
    owner        TEXT PRIMARY KEY,          -- "NAME#INCARNATION": a restart is a new owner
    name         TEXT NOT NULL,             -- cluster.instance
    seen_until   TIMESTAMPTZ NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL
);

-- One row per account ever owned. `epoch` grows by one at every take-over: a write or a send
-- fenced with an older epoch is refused.
CREATE TABLE leases (
    account      TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    epoch        BIGINT NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);

-- The epoch under which a queued delivery was last handed to a connector.
ALTER TABLE outbox ADD COLUMN claimed_epoch BIGINT;

-- Refuses (SQLSTATE PSL01) unless `p_owner` holds the lease of `p_account` at `p_epoch` and it
-- has not expired. It locks the lease row until the transaction ends: a take-over waits for a
-- fenced write to commit, so no write lands after the lease changed hands.
CREATE FUNCTION passerelle_fence(p_account TEXT, p_owner TEXT, p_epoch BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM leases
     WHERE account = p_account AND owner = p_owner AND epoch = p_epoch AND expires_at > now()
     FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the lease of % at epoch % is not held', p_account, p_epoch
            USING ERRCODE = 'PSL01';
    END IF;
END $$;

-- Claims the queued delivery `p_id` of `p_account` for a send, fenced: false when the row is
-- gone (delivered or given up on meanwhile); raises PSL01 when the lease is not held.
CREATE FUNCTION passerelle_claim(p_account TEXT, p_owner TEXT, p_epoch BIGINT, p_id BIGINT)
RETURNS BOOLEAN LANGUAGE plpgsql AS $$
BEGIN
    PERFORM passerelle_fence(p_account, p_owner, p_epoch);
    UPDATE outbox SET claimed_epoch = p_epoch WHERE id = p_id AND account = p_account;
    RETURN FOUND;
END $$;
