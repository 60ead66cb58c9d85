-- A BlockCredit for an order with a parked retry and no recorded payment waits with that retry (handlers.py,
-- domain.block_waits): the reconciler saw the order paid, the ledger has not yet consumed its payment, so it has
-- never had the chance to credit it. The order's PaymentSucceeded deletes the row, credits the order and applies
-- the block only if the credit is not made; the sweeper, when the row expires unpaid, writes the block and its
-- final CreditRejected with the retry's dead letter.
ALTER TABLE parked_retries ADD COLUMN block_user_id text, ADD COLUMN block_reason text;
