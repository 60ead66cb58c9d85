-- credited: outside a transaction
-- The money audit judges an order whose risk review was decided in its window however long before it was paid (a
-- release's PaymentSucceeded went out then; a rejection's refund is owed from then): those orders of a window by this
-- index, not a scan of orders. Built concurrently, so orders are placed and paid while it builds on a large table
-- (servicekit.postgres.OUTSIDE_A_TRANSACTION); a build stopped part way leaves an invalid index, dropped first.
DROP INDEX CONCURRENTLY IF EXISTS orders_reviewed_at;
CREATE INDEX CONCURRENTLY orders_reviewed_at ON orders (reviewed_at)
    WHERE review_status IN ('released', 'rejected') AND payment_status = 'succeeded';
