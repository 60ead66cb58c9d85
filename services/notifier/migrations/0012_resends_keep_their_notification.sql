-- A resend keeps its notification: deleting a notification that has one is refused, no longer cascaded. The retention
-- (notifier.adapters.retention) deletes resends first and a notification only when no resend of it is left, but it
-- decides from the snapshot its batch started with: a resend recorded meanwhile (support asking again for an order
-- past its keep time) was deleted by the cascade once its notification went, with its pending deliveries, after
-- support was told it was queued, and the user never got it. Refused, the batch fails and is tried again at the next
-- interval, which sees the resend and keeps the notification. resends is small: checking its rows is quick.
ALTER TABLE resends
    DROP CONSTRAINT resends_notification_id_fkey,
    ADD CONSTRAINT resends_notification_id_fkey
        FOREIGN KEY (notification_id) REFERENCES notifications (notification_id);
