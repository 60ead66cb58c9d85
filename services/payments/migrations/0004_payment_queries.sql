-- Orders with no payment outcome whose provider payments asks itself, in case the provider's callback is
-- lost or late: one row per order, written with the order, until a query finds it paid, or it expires and
-- is closed at the provider. `due_at` is when to ask next. A worker that takes a row first moves `due_at`
-- past its lease (FOR UPDATE SKIP LOCKED), so one order is asked by one worker at a time, and the row of a
-- worker that died is due again when its lease ends.
CREATE TABLE payment_queries (
    order_id text PRIMARY KEY REFERENCES orders (order_id),
    provider text NOT NULL,
    channel text NOT NULL,
    due_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    last_answer text
);
CREATE INDEX payment_queries_due_at ON payment_queries (due_at);
