"""ledger: credits users' wallets, double-entry, exactly once per order, and announces each credit."""
