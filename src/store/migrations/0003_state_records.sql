-- Connector state rows written as records (delivery statuses, seen update ids) carry the time
-- they were written and are purged with the message map's retention; other rows have NULL.
ALTER TABLE connector_state ADD COLUMN recorded_at INTEGER;
CREATE INDEX connector_state_by_age ON connector_state(recorded_at) WHERE recorded_at IS NOT NULL;
