-- The users the ledger credits, each with the one currency their wallet is kept in. A credit for a user
-- the ledger does not know is refused (retryably: the platform may register them later) unless the
-- ledger registers users on their first credit (LEDGER_REGISTER_ON_FIRST_CREDIT, the development default);
-- a credit in another currency than the user's is refused for good.
CREATE TABLE users (
    user_id text PRIMARY KEY,
    currency char(3) NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO users (user_id, currency)
SELECT DISTINCT ON (user_id) user_id, currency FROM accounts WHERE kind = 'wallet' ORDER BY user_id, account_id;
