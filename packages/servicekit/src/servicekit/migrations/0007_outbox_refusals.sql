-- A row the broker refused for good (larger than its topic's max.message.bytes) no longer holds back the rows after
-- it: the relay marks it (refusals, why, when to try again) and sends it alone, never again in a batch with others;
-- refused alone too, it stays here, set aside (the claim of batches skips it), retried alone with a growing pause
-- until the broker side is fixed, and reported once (a log line, a metric, a dead letter naming its id).
-- refusals: 0 a row like any other; 1 refused in a batch, to be sent alone; 2 and more refused alone.
ALTER TABLE outbox
    ADD COLUMN refusals integer NOT NULL DEFAULT 0,
    ADD COLUMN refused_reason text,
    ADD COLUMN retry_at timestamptz;
-- Empty but in an incident: the relay looks for due refused rows every poll without walking the outbox.
CREATE INDEX outbox_refused ON outbox (id) WHERE refusals > 0;
