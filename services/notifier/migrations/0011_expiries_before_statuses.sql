-- An expiry is stored at sequence 0 (notifier.adapters.postgres.EXPIRY_SEQUENCE), before every status change of its
-- order, which the reconciler numbers from 1: at 1, a late payment's credit (a first status, number 1) tied with it,
-- went out while the expiry's push was still waiting for its retry, and the expiry then replaced it on the device.
-- Its payload keeps the sequence the user was told.
UPDATE deliveries d SET sequence = 0
FROM notifications n
WHERE n.notification_id = d.notification_id AND n.status = 'expired' AND d.sequence <> 0;
UPDATE notifications SET sequence = 0 WHERE status = 'expired' AND sequence <> 0;
