-- A status link's right ends when the link expires, and so does that of a device registered through it: expires_at
-- is the expiry of the link that registered the device (the latest, when registered again through a fresh link of the
-- same order), past which no notification is queued for it nor sent to it. NULL: no end, for a device the platform
-- registered for every order, and for one registered through a link before this migration (that link's expiry was not
-- recorded; the next registration through a link records one). A nullable column without a default: no rewrite, and
-- the fan-out still finds a user's devices by push_subscriptions_user_id, this being a filter on the rows it reads.
ALTER TABLE push_subscriptions ADD COLUMN expires_at timestamptz;
