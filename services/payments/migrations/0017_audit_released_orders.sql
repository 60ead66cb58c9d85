-- The money audit judges an order released from risk review in its window however long before it was paid (its
-- PaymentSucceeded went out at the release): the released orders of a window by this index, not a scan of orders.
CREATE INDEX orders_released_at ON orders (reviewed_at) WHERE review_status = 'released' AND payment_status = 'succeeded';
