-- A refund is on record from before the provider is first asked (`requested`) and while the provider has not said
-- how it ended (`pending`: accepted, not finished), not only once it has: support refuses a re-drive or a second
-- refund of the order meanwhile (a credit beside a refund the provider finishes later pays the user twice), and
-- payments keeps asking the provider until it answers, instead of dead-lettering the command (payments.refunds).
-- `due_at` is when payments asks next (a lease while it asks); `asked_reason` is the reason sent with the request,
-- sent again if the provider has no record of it.
ALTER TABLE refunds DROP CONSTRAINT refunds_status_check;
ALTER TABLE refunds ADD CONSTRAINT refunds_status_check
    CHECK (status IN ('requested', 'pending', 'succeeded', 'failed'));
ALTER TABLE refunds ADD COLUMN due_at timestamptz;
ALTER TABLE refunds ADD COLUMN asked_reason text NOT NULL DEFAULT '';
CREATE INDEX refunds_in_flight_due_at ON refunds (due_at) WHERE status IN ('requested', 'pending');
