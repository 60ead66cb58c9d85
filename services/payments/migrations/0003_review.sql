-- What the top-up buys (optional: older orders have none), and the risk review of an order held before
-- its credit: review_status is NULL (never held), 'held', 'released' or 'rejected'.
ALTER TABLE orders
    ADD COLUMN product text,
    ADD COLUMN review_status text CHECK (review_status IN ('held', 'released', 'rejected')),
    ADD COLUMN review_reason text,
    ADD COLUMN review_expected_at timestamptz,
    ADD COLUMN reviewed_at timestamptz;
CREATE INDEX orders_user_id ON orders (user_id);
