-- A status change that arrives after a newer one of its order was recorded (a lower sequence: a late redelivery or a
-- replay) is recorded for the timeline and the inbox, and never pushed: the user is never told an order went back.
ALTER TABLE notifications DROP CONSTRAINT notifications_state_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_state_check
    CHECK (state IN ('pending', 'delivered', 'failed', 'inbox_only', 'superseded'));
