-- A consumed batch takes the locks of all its orders up front, always in the order of their keys, so two batches
-- (two instances, or the payments and commands consumers) that share orders wait for each other instead of
-- deadlocking. The key is the one each order's lock has always had; the loop is what fixes the order.
-- One lock per distinct order of a batch: PostgreSQL's lock table holds max_locks_per_transaction times
-- max_connections of them (6,400 by default), room for three ledger instances' polls of 2,000 at once.
CREATE FUNCTION ledger_lock_orders(order_ids text[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    lock_key integer;
BEGIN
    FOR lock_key IN SELECT DISTINCT hashtext('ledger-order:' || o) FROM unnest(order_ids) AS o ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(lock_key);
    END LOOP;
END;
$$;
