-- Top-up orders. `payment_status` is what the provider told us; `status` is the order's lifecycle as
-- the user sees it (paid, credited, delayed, refunded, ...), kept current from orders.status.
CREATE TABLE orders (
    order_id text PRIMARY KEY,
    user_id text NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    currency char(3) NOT NULL,
    channel text NOT NULL,
    payment_status text NOT NULL,
    status text NOT NULL,
    status_sequence integer NOT NULL DEFAULT 0,
    provider text,
    provider_txn_id text,
    created_at timestamptz NOT NULL,
    paid_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Idempotency keys for order creation, kept at least 24 hours.
CREATE TABLE idempotency_keys (
    key text PRIMARY KEY,
    request_fingerprint text NOT NULL,
    order_id text NOT NULL REFERENCES orders (order_id),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every callback a provider sent, applied or not, with the outcome and reason: nothing is dropped silently.
CREATE TABLE callbacks (
    id bigserial PRIMARY KEY,
    provider text NOT NULL,
    order_id text,
    received_at timestamptz NOT NULL DEFAULT now(),
    outcome text NOT NULL,
    reason text NOT NULL,
    signature_header text,
    body bytea NOT NULL
);
CREATE INDEX callbacks_order_id ON callbacks (order_id);
