-- The payment behind each order, as the first PaymentSucceeded the ledger consumed for it said (recorded even
-- when the development fault knob drops the credit): a RetryCredit credits only when its user, amount, currency
-- and provider transaction id match this row. Orders paid before this table existed have none, so a retry for
-- one of them that is still uncredited is refused; its PaymentSucceeded, consumed again, would record it.
CREATE TABLE payment_facts (
    order_id text PRIMARY KEY,
    user_id text NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    currency char(3) NOT NULL,
    provider_txn_id text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
