-- A support case of its own kind for money a provider says it took that payments refuses to apply (contracts
-- CaseKind.REFUSED_CHARGE): a second charge on a paid order, another amount, a provider that does not take the
-- order's channel. Opened by payments in the transaction that keeps the refused notice for audit.
ALTER TABLE support_cases DROP CONSTRAINT support_cases_kind_check;
ALTER TABLE support_cases ADD CONSTRAINT support_cases_kind_check
    CHECK (kind IN ('needs_support', 'review_overdue', 'credit_without_payment', 'refused_charge'));
