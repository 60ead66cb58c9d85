-- The money audit reads every credit of a time window in keyset pages ordered by (created_at, transaction_id):
-- one index range scan per page. Only credits (compensations are not the payment's money).
CREATE INDEX transactions_credits_by_time ON transactions (created_at, transaction_id) WHERE kind = 'credit';
