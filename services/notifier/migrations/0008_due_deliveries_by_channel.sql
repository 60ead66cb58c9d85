-- While a channel has no room (a platform webhook hung in an outage, every connection of its own taken), the worker
-- claims the other channels' due deliveries by name: this index finds them without reading the full channel's due
-- rows, which the claim did one by one before (all 200,000 of a test's webhook backlog, for 50 pushes).
-- deliveries_due stays for the claim of every channel, in due order.
CREATE INDEX deliveries_due_by_channel ON deliveries (channel, next_attempt_at) WHERE state = 'pending';
