-- Double-entry ledger. A transaction's entries sum to zero; an account's balance is the sum of its entries;
-- a wallet never goes negative. The platform's top-up clearing account carries the other side of every credit.
CREATE TABLE accounts (
    account_id text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('wallet', 'topup_clearing', 'compensation')),
    user_id text,
    currency char(3) NOT NULL,
    balance bigint NOT NULL DEFAULT 0,
    frozen boolean NOT NULL DEFAULT false,
    CONSTRAINT wallet_not_negative CHECK (kind <> 'wallet' OR balance >= 0)
);
CREATE INDEX accounts_user_id ON accounts (user_id) WHERE kind = 'wallet';

-- One credit (and at most one compensation) per order: the unique key is what makes credits exactly-once.
CREATE TABLE transactions (
    transaction_id text PRIMARY KEY,
    order_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('credit', 'compensation')),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, kind)
);

CREATE TABLE entries (
    id bigserial PRIMARY KEY,
    transaction_id text NOT NULL REFERENCES transactions (transaction_id),
    account_id text NOT NULL REFERENCES accounts (account_id),
    amount bigint NOT NULL CHECK (amount <> 0)
);
CREATE INDEX entries_transaction_id ON entries (transaction_id);

-- Ground truth of the development fault knob: orders whose credit step was deliberately dropped.
CREATE TABLE injected_faults (
    order_id text PRIMARY KEY,
    kind text NOT NULL,
    injected_at timestamptz NOT NULL DEFAULT now()
);
