-- A rotated key stays accepted until its (shortened) expiry while its successor, of the same name, is live:
-- `credited keys rotate <name>` changes a platform's key without a moment when neither is accepted.
ALTER TABLE api_keys ADD COLUMN rotated_at timestamptz;

-- A name still says one current key (`credited keys revoke <name>` revokes it); rotated keys go by their id.
DROP INDEX api_keys_live_name;
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL AND rotated_at IS NULL;
