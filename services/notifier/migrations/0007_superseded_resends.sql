-- A person's resend of an order's latest notification that is still waiting (its attempt failed and is due again)
-- when a newer status of the order is notified is never sent: pushed after the newer one, under the same push Topic,
-- it would leave the device telling the user the order went back. Its delivery is settled 'superseded'.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check
    CHECK (state IN ('pending', 'delivered', 'failed', 'gone', 'superseded'));
