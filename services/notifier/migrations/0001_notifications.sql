-- One notification per (order, status): a redelivered status change finds its row and adds nothing.
-- Rows are delivered by the delivery worker (an outbox for people); `state` tracks each delivery.
CREATE TABLE notifications (
    notification_id text PRIMARY KEY,
    order_id text NOT NULL,
    user_id text NOT NULL,
    status text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    last_error text,
    UNIQUE (order_id, status)
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notifications_user_id ON notifications (user_id, created_at);
