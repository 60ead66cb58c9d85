-- One refund per order, to the original payment method, with the provider's answer.
CREATE TABLE refunds (
    order_id text PRIMARY KEY REFERENCES orders (order_id),
    refund_id text,
    status text NOT NULL CHECK (status IN ('succeeded', 'failed')),
    reason text NOT NULL,
    attempts integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
