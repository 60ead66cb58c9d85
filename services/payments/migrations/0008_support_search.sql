-- The support API finds orders by the provider's transaction id (a user quotes it from their payment app).
CREATE INDEX orders_provider_txn_id ON orders (provider_txn_id) WHERE provider_txn_id IS NOT NULL;
