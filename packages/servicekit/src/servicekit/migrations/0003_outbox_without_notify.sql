-- A commit that has called NOTIFY holds one lock for the whole cluster (AccessExclusiveLock on object 0 of class
-- 1262, pg_database) through its WAL flush, so notifying commits wait for each other and are never flushed
-- together. Every outbox write notified, so under load payments', the ledger's and the notifier's commits queued
-- behind one another (20-60 ms at 200-400 orders/s). A relay runs in the process of every writer of its outbox
-- and is woken in that process after the commit (PostgresUnitOfWork's on_commit); its poll is the fallback.
DROP TRIGGER IF EXISTS outbox_inserted ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
