-- Inside a consumer's batch the platform accounts' balances (the top-up clearing and compensation accounts,
-- which every credit touches) move once, just before the batch commits, so no instance holds those rows from
-- its batch's first credit to its commit. An entry may then reference a platform account that the same
-- transaction opens later: the foreign key is checked at commit.
ALTER TABLE entries ALTER CONSTRAINT entries_account_id_fkey DEFERRABLE INITIALLY DEFERRED;
