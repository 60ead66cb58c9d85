-- The query worker claims each provider's due queries apart, at most as many as that provider has room for
-- (payments.queries.QueryWorker): a provider that is down no longer takes every round from the others.
CREATE INDEX payment_queries_provider_due_at ON payment_queries (provider, due_at);
