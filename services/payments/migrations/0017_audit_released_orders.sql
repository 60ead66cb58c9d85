-- The money audit judges an order whose risk review was decided in its window however long before it was paid (a
-- release's PaymentSucceeded went out then; a rejection's refund is owed from then): those orders of a window by this
-- index, not a scan of orders.
CREATE INDEX orders_reviewed_at ON orders (reviewed_at)
    WHERE review_status IN ('released', 'rejected') AND payment_status = 'succeeded';
