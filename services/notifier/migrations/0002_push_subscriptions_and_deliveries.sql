-- Users reach us through push subscriptions (Web Push, FCM) and choose their language.
CREATE TABLE user_preferences (
    user_id text PRIMARY KEY,
    locale text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per device: a Web Push subscription (endpoint URL + p256dh + auth) or an FCM registration
-- token (in `endpoint`). The id is derived from (channel, endpoint): registering again updates the keys.
CREATE TABLE push_subscriptions (
    subscription_id text PRIMARY KEY,
    user_id text NOT NULL,
    channel text NOT NULL CHECK (channel IN ('webpush', 'fcm')),
    endpoint text NOT NULL,
    p256dh text NOT NULL DEFAULT '',
    auth text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_subscriptions_user_id ON push_subscriptions (user_id);

-- One delivery per (notification, target): the webhook, or a subscription. A delivery is settled on its
-- own, so a failing device never makes another target receive the notification twice. While a worker
-- holds a delivery, next_attempt_at is its lease: a worker killed mid-delivery leaves the row pending,
-- and it is due again when the lease runs out.
ALTER TABLE notifications ADD COLUMN sequence integer NOT NULL DEFAULT 0;
ALTER TABLE notifications DROP CONSTRAINT notifications_state_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_state_check
    CHECK (state IN ('pending', 'delivered', 'failed', 'inbox_only'));

CREATE TABLE deliveries (
    notification_id text NOT NULL REFERENCES notifications (notification_id) ON DELETE CASCADE,
    target text NOT NULL,
    channel text NOT NULL,
    order_id text NOT NULL,
    sequence integer NOT NULL,
    subscription_id text,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed', 'gone')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    last_error text,
    PRIMARY KEY (notification_id, target)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
-- Deliveries to one target about one order go out in status order (see the claim query).
CREATE INDEX deliveries_order_target ON deliveries (order_id, target, sequence) WHERE state = 'pending';

-- Notifications queued before this migration go to the webhook, as they would have.
INSERT INTO deliveries (notification_id, target, channel, order_id, sequence, attempts, next_attempt_at)
SELECT notification_id, 'webhook', 'webhook', order_id, 0, attempts, next_attempt_at
FROM notifications WHERE state = 'pending';
