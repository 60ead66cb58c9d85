-- The relay's claim takes the lowest unclaimed ids. Through the primary key it walked every row claimed and not yet
-- acknowledged (every relay's in-flight batches) and every deleted row not yet vacuumed before it found one, so a
-- claim grew with the backlog it was meant to drain: 20,744 buffers and 5.9 ms for 500 rows past 10,000 claimed and
-- 15,000 deleted ones, against 828 buffers and 1.5 ms through this index (EXPLAIN ANALYZE, session 31). With two
-- relays on one outbox (two instances of a service on one database) each walked the other's claims too, and the
-- drain collapsed (docs/capacity.md, step 3). The index holds only unclaimed rows.
CREATE INDEX outbox_unclaimed ON outbox (id) WHERE claimed_by IS NULL;
