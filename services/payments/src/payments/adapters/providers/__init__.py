"""Payment provider adapters behind payments.ports.PaymentProvider: one module per provider."""
