-- The processed events are pruned by age (servicekit.retention): a BRIN index finds the old ones in a table that only
-- grows at its end, for almost nothing per insert (a B-tree would add an index entry to every consumed event).
CREATE INDEX processed_events_processed_at ON processed_events USING brin (processed_at);
