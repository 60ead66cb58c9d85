-- A relay claims rows before it publishes them, marking each with its database session (backend pid), so
-- no transaction stays open while Kafka answers. A claim whose session no longer exists is given back.
ALTER TABLE outbox ADD COLUMN claimed_by integer;
