-- Orders the ledger will never credit: blocked before a refund, or finally rejected. The credit path
-- and the block path both take the order's advisory lock, so a credit and a block never both win.
CREATE TABLE credit_blocks (
    order_id text PRIMARY KEY,
    reason text NOT NULL,
    blocked_at timestamptz NOT NULL DEFAULT now()
);
