-- The money audit reads every paid order of a time window in keyset pages ordered by (paid_at, order_id): one
-- index range scan per page. Only paid orders are in it, so the index is as small as the audit needs.
CREATE INDEX orders_paid_by_time ON orders (paid_at, order_id) WHERE payment_status = 'succeeded';

-- Each money audit's outcome: what it found by kind and what it re-drove. Every payments process shows the
-- latest one in its metrics (whichever process ran it), and a scheduled run starts only when the last one is
-- older than the interval, whichever process asks.
CREATE TABLE audit_runs (
    id bigserial PRIMARY KEY,
    trigger text NOT NULL CHECK (trigger IN ('schedule', 'request')),
    since timestamptz NOT NULL,
    until timestamptz NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    counts jsonb NOT NULL,
    redriven integer NOT NULL,
    in_grace integer NOT NULL
);
CREATE INDEX audit_runs_started_at ON audit_runs (trigger, started_at);
