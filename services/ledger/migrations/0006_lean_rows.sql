-- A consumed batch writes each credit's rows set-based; these make each row cheaper to write.
-- An entry is named by its transaction and account (a posting touches an account once): no sequence to draw from
-- and one index instead of two.
ALTER TABLE entries DROP CONSTRAINT entries_pkey;
ALTER TABLE entries DROP COLUMN id;
ALTER TABLE entries ADD PRIMARY KEY (transaction_id, account_id);
DROP INDEX entries_transaction_id;
-- A balance update leaves room on its page for the row's next version, so it stays a heap-only update that
-- touches no index (the clearing account's row and every wallet change once per batch).
ALTER TABLE accounts SET (fillfactor = 70);
