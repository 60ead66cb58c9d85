-- Who bound each order Idempotency-Key: the name of the API key its request came with (a key rotated under the
-- same name keeps its Idempotency-Keys). A key is its owner's: another API key's request with it is refused 409
-- and never answered with the first order and its status link. Keys bound before have none and answer as before.
ALTER TABLE idempotency_keys ADD COLUMN owner text;
