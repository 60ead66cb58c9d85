-- Notifications, their deliveries and resends are deleted once older than NOTIFIER_NOTIFICATIONS_KEEP_S
-- (notifier.adapters.retention; servicekit.retention): each batch finds its oldest rows by these indexes instead of
-- scanning tables that hold hundreds of millions of rows. B-trees, not BRIN like processed_events' first index: pruning
-- frees the oldest pages for new rows, which would widen every block range's summary until each matched every prune
-- (see payments' 0013). Deliveries have none: they go with their notification or resend (below), so settling one in
-- the hot path adds no index entry.
CREATE INDEX resends_requested_at ON resends (requested_at);
CREATE INDEX notifications_created_at ON notifications (created_at);
-- A deleted notification's resends and a deleted resend's deliveries go by ON DELETE CASCADE, each a look up by the
-- referencing column, and the pruning asks first whether any is left or pending: without these, each deleted row
-- would read the whole table it is referenced from (the deliveries, for every resend). Few deliveries are a resend's,
-- so the partial index holds only those.
CREATE INDEX resends_notification_id ON resends (notification_id);
CREATE INDEX deliveries_resend_id ON deliveries (resend_id) WHERE resend_id IS NOT NULL;
