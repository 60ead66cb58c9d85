-- Each recorded money audit keeps, beside the orders it found in grace, the orders it did not judge because their
-- refund was in flight at the provider (requested, pending): the latest run read back from here (every payments
-- process's gauges) says what the run itself said. A column like `in_grace`, not a key of `counts`, which holds
-- findings by kind only. Runs recorded before it count none.
ALTER TABLE audit_runs ADD COLUMN refunds_in_flight integer NOT NULL DEFAULT 0;
