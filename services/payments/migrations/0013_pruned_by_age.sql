-- Refused callbacks nothing was read from (no order: a signature that failed, a body that is no callback) and order
-- Idempotency-Keys are deleted once older than their keep times (PAYMENTS_REFUSED_CALLBACKS_KEEP_S,
-- PAYMENTS_IDEMPOTENCY_KEYS_KEEP_S; servicekit.retention): each batch finds the oldest by these indexes instead of
-- scanning the table. The callbacks' is partial, so the callbacks kept for ever (accepted, or refused but signed about
-- an order) cost it nothing. The keys' is a B-tree, not a BRIN like processed_events': pruning frees the oldest pages
-- for new keys, which would widen every block range's summary until each matched every prune.
CREATE INDEX callbacks_refused_unread_received_at ON callbacks (received_at)
    WHERE outcome = 'rejected' AND order_id IS NULL;
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
