"""PrometheusPaymentsMetrics: orders created, provider callbacks, payment queries and refunds in flight, on the
service's registry.

Labels come from configuration, never from the request: a channel that is not configured is counted as
`other` and a provider without a secret as `unknown`, so a caller cannot create series at will.
"""

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from contracts.events import CaseKind, CaseSeverity, OrderStatus
from payments.domain import REFUNDS_IN_FLIGHT, Outcome, PaymentState
from servicekit.metric_channels import OTHER_CHANNEL

UNKNOWN_PROVIDER = "unknown"


class PrometheusPaymentsMetrics:
    def __init__(self, registry: CollectorRegistry, *, channels: Iterable[str], providers: Iterable[str]) -> None:
        self._channels = frozenset(channels)
        self._providers = frozenset(providers)
        self.orders_created = Counter(
            "payments_orders_created_total",
            "Top-up orders created, by payment channel.",
            ["channel"],
            registry=registry,
        )
        self.callbacks = Counter(
            "payments_callbacks_total",
            "Payment provider callbacks, by provider and outcome (paid, failed, duplicate, ignored, rejected).",
            ["provider", "outcome"],
            registry=registry,
        )
        self.status_changes = Counter(
            "payments_order_status_changes_total",
            "Order lifecycle statuses payments applied (what GET /v1/orders/{id} answers), by status.",
            ["status"],
            registry=registry,
        )
        self.queries = Counter(
            "payments_provider_queries_total",
            "Payment queries answered by providers, by provider and answer (paid, pending, failed, closed, not_found,"
            " unknown: no answer).",
            ["provider", "answer"],
            registry=registry,
        )
        self.recovered_by_query = Counter(
            "payments_recovered_by_query_total",
            "Payments applied because a query found them paid before any callback said so, by provider and channel.",
            ["provider", "channel"],
            registry=registry,
        )
        self.orders_expired = Counter(
            "payments_orders_expired_total",
            "Orders that stayed unpaid until their payment expiry and were closed at the provider, by provider and"
            " channel.",
            ["provider", "channel"],
            registry=registry,
        )
        self.paid_at_clamped = Counter(
            "payments_paid_at_clamped_total",
            "Payments whose provider put paid_at more than PAYMENTS_MAX_CLOCK_SKEW_S ahead of when the notice arrived"
            " (or as far before the order was placed),"
            " applied with paid_at clamped to its arrival, by provider.",
            ["provider"],
            registry=registry,
        )
        self.query_wait = Gauge(
            "payments_query_wait_seconds",
            "How long after its due time the query worker now takes a payment query: the lateness 3 in 4 paid"
            " callbacks of the last 10 s stayed within (from the stated paid_at, or from the order's placing when"
            " later), at most PAYMENTS_QUERY_DELAY_S (so a merely late callback is not asked about).",
            registry=registry,
        )
        self.in_flight_refunds = Gauge(
            "payments_refunds_in_flight",
            "Refunds without an outcome yet, by status (requested: the provider may not have it yet; pending: it"
            " accepted it and has not finished), read from the database after each refund follow-up round: every"
            " payments process shows the same.",
            ["status"],
            registry=registry,
        )
        self.oldest_refund = Gauge(
            "payments_refund_oldest_in_flight_seconds",
            "How long ago the oldest refund still without an outcome was requested (0 when none is); a day opens its"
            " needs_support case.",
            registry=registry,
        )
        # Every series exists from the start, so the first order or callback shows in rate() and increase().
        for channel in (*self._channels, OTHER_CHANNEL):
            self.orders_created.labels(channel)
        for provider in (*self._providers, UNKNOWN_PROVIDER):
            for outcome in Outcome:
                self.callbacks.labels(provider, outcome.value)
        for status in OrderStatus:
            self.status_changes.labels(status.value)
        self.refunds_in_flight({}, 0.0)
        for provider in self._providers:
            for state in PaymentState:
                self.queries.labels(provider, state.value)
            self.paid_at_clamped.labels(provider)
            for channel in (*self._channels, OTHER_CHANNEL):
                self.recovered_by_query.labels(provider, channel)
                self.orders_expired.labels(provider, channel)

    def order_created(self, channel: str) -> None:
        self.orders_created.labels(self._channel(channel)).inc()

    def status_changed(self, status: OrderStatus) -> None:
        self.status_changes.labels(status.value).inc()

    def callback(self, provider: str, outcome: Outcome) -> None:
        self.callbacks.labels(self._provider(provider), outcome.value).inc()

    def clamped(self, provider: str) -> None:
        self.paid_at_clamped.labels(self._provider(provider)).inc()

    def waiting(self, seconds: float) -> None:
        self.query_wait.set(seconds)

    def refunds_in_flight(self, counts: Mapping[str, int], oldest_s: float) -> None:
        """The refunds in flight by status; a status not in `counts` shows 0."""
        for status in REFUNDS_IN_FLIGHT:
            self.in_flight_refunds.labels(status).set(counts.get(status, 0))
        self.oldest_refund.set(oldest_s)

    def answered(self, provider: str, state: PaymentState) -> None:
        self.queries.labels(self._provider(provider), state.value).inc()

    def recovered(self, provider: str, channel: str) -> None:
        self.recovered_by_query.labels(self._provider(provider), self._channel(channel)).inc()

    def expired(self, provider: str, channel: str) -> None:
        self.orders_expired.labels(self._provider(provider), self._channel(channel)).inc()

    def _provider(self, provider: str) -> str:
        return provider if provider in self._providers else UNKNOWN_PROVIDER

    def _channel(self, channel: str) -> str:
        return channel if channel in self._channels else OTHER_CHANNEL


class SupportCaseMetrics:
    """Support cases: open ones by kind, severity and whether someone acknowledged them (refreshed from the
    database, so every payments process answers the same), and cases this process opened, by kind."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.open = Gauge(
            "payments_support_cases_open",
            "Support cases not resolved, by kind, severity and acknowledged (true once someone owned up to it).",
            ["kind", "severity", "acknowledged"],
            registry=registry,
        )
        self.opened = Counter(
            "payments_support_cases_opened_total",
            "Support cases opened from the reconciler's CaseRequested, by kind.",
            ["kind"],
            registry=registry,
        )
        self.repaged = Counter(
            "payments_support_cases_repaged_total",
            "Unacknowledged support cases this process re-paged one severity higher, by kind and new severity.",
            ["kind", "severity"],
            registry=registry,
        )
        # Every series from the start, at zero: an alert on a count that went back to zero resolves.
        self.show({})
        for kind in CaseKind:
            self.opened.labels(kind.value)
            for severity in CaseSeverity:
                self.repaged.labels(kind.value, severity.value)

    def show(self, counts: Mapping[tuple[str, str, bool], int]) -> None:
        """The open cases by (kind, severity, acknowledged); every combination not in `counts` shows 0."""
        for kind in CaseKind:
            for severity in CaseSeverity:
                for acknowledged in (False, True):
                    value = counts.get((kind.value, severity.value, acknowledged), 0)
                    self.open.labels(kind.value, severity.value, str(acknowledged).lower()).set(value)

    def case_opened(self, kind: CaseKind) -> None:
        self.opened.labels(kind.value).inc()

    def case_repaged(self, kind: str, severity: str) -> None:
        self.repaged.labels(kind, severity).inc()
