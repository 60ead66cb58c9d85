-- A person asked (payments' support API, scope support:act) to send an order's latest notification to its user
-- again: which notification, why, who (the API key's name) and when. Its deliveries are ordinary delivery rows
-- (target '<target>#resend:<resend_id>', so they never collide with the first delivery to that target), claimed,
-- retried, settled and dead-lettered like any other: the resend takes the same durable path.
CREATE TABLE resends (
    resend_id text PRIMARY KEY,
    notification_id text NOT NULL REFERENCES notifications (notification_id) ON DELETE CASCADE,
    order_id text NOT NULL,
    reason text NOT NULL,
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resends_order_id ON resends (order_id, requested_at);
ALTER TABLE deliveries ADD COLUMN resend_id text REFERENCES resends (resend_id) ON DELETE CASCADE;
