-- The processed events' age index is a B-tree, as the payments' Idempotency-Keys' is (payments 0013), no longer a
-- BRIN: the table grows at its end only until its first prune. VACUUM then gives the pruned rows' pages to new events,
-- and a BRIN range's summary never narrows: a range summarised with month-old events and refilled with today's matched
-- every prune, so each batch read every such range again, and after a few weeks the whole table before the rows due
-- (60,000 rows kept read for a batch of 2,000 in tests/servicekit/integration/
-- test_processed_events_pruning_after_the_table_is_reused.py). The B-tree costs an index entry per consumed event; its
-- batches read the rows they delete.
DROP INDEX IF EXISTS processed_events_processed_at;
CREATE INDEX processed_events_processed_at ON processed_events (processed_at);
