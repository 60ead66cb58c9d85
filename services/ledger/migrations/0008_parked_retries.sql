-- RetryCredits for orders with no recorded payment yet (payment_facts), one row per order: the first such retry's
-- claim and the record as it came, when it came, and how many retries of the order have joined it. The order's
-- PaymentSucceeded deletes the row in the batch that records its payment; a row older than LEDGER_RETRY_PARK_S
-- whose order is still unpaid is dead-lettered (through the outbox) and deleted by the ledger's sweeper.
CREATE TABLE parked_retries (
    order_id text PRIMARY KEY,
    event_id text NOT NULL,
    user_id text NOT NULL,
    amount bigint NOT NULL,
    currency char(3) NOT NULL,
    provider_txn_id text NOT NULL,
    record_value bytea NOT NULL,
    record_headers jsonb NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    retries integer NOT NULL DEFAULT 1 CHECK (retries > 0)
);

CREATE INDEX parked_retries_first_seen ON parked_retries (first_seen);
