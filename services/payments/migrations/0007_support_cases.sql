-- Support cases: an order a person has to own (contracts CaseRequested: remediation ran out, a review hold
-- overdue, a credit with no payment). At most one open case per order and kind; a repeat of the request (same
-- event id) opens nothing. A case is acknowledged by its owner, re-paged one severity higher when nobody
-- acknowledges it in time, and resolved with how.
CREATE TABLE support_cases (
    id bigserial PRIMARY KEY,
    order_id text NOT NULL,
    user_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('needs_support', 'review_overdue', 'credit_without_payment')),
    severity text NOT NULL CHECK (severity IN ('warning', 'page', 'critical')),
    reason text NOT NULL,
    request_event_id text NOT NULL UNIQUE,
    opened_at timestamptz NOT NULL,
    owner text,
    acknowledged_at timestamptz,
    acknowledged_by text,
    repaged_at timestamptz,
    resolved_at timestamptz,
    resolved_by text,
    resolution text
);
CREATE UNIQUE INDEX support_cases_one_open ON support_cases (order_id, kind) WHERE resolved_at IS NULL;
CREATE INDEX support_cases_open_by_age ON support_cases (opened_at) WHERE resolved_at IS NULL;
CREATE INDEX support_cases_order_id ON support_cases (order_id);

-- Everything that happened to a case, in order: opened, acknowledged, assigned, noted, re-paged, resolved.
-- `actor` is the API key's name (or `credited` for what the service did by itself).
CREATE TABLE support_case_history (
    id bigserial PRIMARY KEY,
    case_id bigint NOT NULL REFERENCES support_cases (id),
    at timestamptz NOT NULL,
    actor text NOT NULL,
    action text NOT NULL CHECK (action IN ('opened', 'acknowledged', 'assigned', 'noted', 'repaged', 'resolved')),
    detail text NOT NULL DEFAULT ''
);
CREATE INDEX support_case_history_case_id ON support_case_history (case_id, id);

-- What a person did to an order through the support API (scope support:act): re-drive the credit, refund,
-- grant compensation, resend a notification, with who, when and why. The command it sent (if any) went out
-- through the outbox in the same transaction, under `command_event_id`; the same Idempotency-Key repeats nothing.
CREATE TABLE support_actions (
    id bigserial PRIMARY KEY,
    order_id text NOT NULL,
    action text NOT NULL CHECK (action IN ('redrive_credit', 'refund', 'grant_compensation', 'resend_notification')),
    reason text NOT NULL,
    actor_key_id text NOT NULL,
    actor_name text NOT NULL,
    at timestamptz NOT NULL,
    idempotency_key text UNIQUE,
    command_event_id text,
    case_id bigint REFERENCES support_cases (id),
    outcome text NOT NULL DEFAULT 'requested'
);
CREATE INDEX support_actions_order_id ON support_actions (order_id, id);
