-- The request an act's Idempotency-Key was first used with: a fingerprint of its order, action, reason and amount
-- (payments.support.act_fingerprint), so the key reused with another request is refused, as for orders, instead of
-- answered with the first act. Acts recorded before have none: their order, action and reason are compared.
ALTER TABLE support_actions ADD COLUMN request_fingerprint text;
