"""The composition root of payments: the only place that builds adapters."""

from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path

from fastapi import FastAPI

from contracts.codec import Envelope
from contracts.commands import IssueRefund
from contracts.events import CaseRequested, OrderStatusChanged
from contracts.topics import Topic
from payments import cases, handlers, refunds
from payments.adapters.audit_books import PostgresAuditBooks
from payments.adapters.audit_http import audit_routes
from payments.adapters.auditor import AuditMetrics, Auditor
from payments.adapters.case_watch import CaseWatch
from payments.adapters.cases import PostgresCases
from payments.adapters.cases_http import case_routes
from payments.adapters.fast import fast_routes
from payments.adapters.grouping import GroupCommit
from payments.adapters.http import SystemClock, routes
from payments.adapters.ledger_credits import LedgerCredits
from payments.adapters.metrics import PrometheusPaymentsMetrics, SupportCaseMetrics
from payments.adapters.neighbours import Neighbours
from payments.adapters.orders import PostgresOrderBook, PostgresStatusBook, read_order
from payments.adapters.postgres import PostgresPayments
from payments.adapters.providers.registry import build_registry
from payments.adapters.providers.transport import QUERIES_IN_FLIGHT
from payments.adapters.queries import PostgresQuerySchedule
from payments.adapters.support_books import PostgresSupportBooks
from payments.adapters.support_http import key_routes, support_routes
from payments.callbacks import Callback, CallbackResult, handle_callbacks
from payments.config import Settings
from payments.domain import Order, Outcome
from payments.lateness import CallbackLateness
from payments.queries import QueryDeps, QueryWorker
from servicekit.http import FastPath, create_app
from servicekit.identity import protect
from servicekit.infrastructure import Infrastructure
from servicekit.kafka import Delivery, only, route
from servicekit.links import status_links
from servicekit.metrics import ServiceMetrics
from servicekit.retention import Pruned, Retention

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
SERVICE = "payments"


async def build(settings: Settings, *, connect: bool = True) -> tuple[Infrastructure, FastAPI]:
    """The service's parts; connected to PostgreSQL and the broker unless `connect` is False (then
    `Infrastructure.run` connects while /healthz already answers)."""
    infra = await Infrastructure.open(SERVICE, settings, MIGRATIONS, connect=connect)
    # Built (keys and certificates read) so a bad provider configuration stops the start. Callbacks of a
    # provider without an HMAC secret, payment queries and refunds go through it.
    providers = build_registry(settings)
    metrics = PrometheusPaymentsMetrics(infra.registry, channels=settings.metric_channels, providers=providers.names)

    uow = infra.outbox_writers(PostgresPayments)
    statuses = PostgresStatusBook(infra.pool)

    async def on_status_changes(deliveries: Sequence[Delivery]) -> None:
        changes = [(m, e) for m, e in deliveries if isinstance(m, OrderStatusChanged)]
        for status in await handlers.handle_status_changes(changes, statuses=statuses):
            metrics.status_changed(status)

    # A poll's status changes are applied in one statement (PostgresStatusBook).
    infra.consume("payments.order-status", [Topic.ORDERS_STATUS], only({OrderStatusChanged}, on_status_changes))
    infra.consume(
        "payments.commands",
        [Topic.PAYMENTS_COMMANDS],
        route(
            {
                IssueRefund: partial(
                    refunds.handle_issue_refund,
                    uow=uow,
                    providers=providers,
                    provider_timeout_s=settings.provider_timeout_s,
                )
            }
        ),
    )
    case_book, case_metrics = PostgresCases(infra.pool, uow), SupportCaseMetrics(infra.registry)

    async def on_case_requested(message: CaseRequested, envelope: Envelope) -> None:
        if await cases.handle_case_requested(message, envelope, cases=case_book, consumer="payments.support-cases"):
            case_metrics.case_opened(message.kind)

    infra.consume("payments.support-cases", [Topic.SUPPORT_CASES], route({CaseRequested: on_case_requested}))
    clock, review = SystemClock(), settings.review_rule()
    policy = settings.query_policy(providers.names)
    schedule = PostgresQuerySchedule(infra.pool)
    # A query holds its row for three provider timeouts (query, close, and room): never two workers at once.
    # Paid callbacks' lateness, which the query worker waits out before it asks (payments.lateness).
    lateness = CallbackLateness()
    deps = QueryDeps(
        schedule, providers, uow, clock, policy, metrics, review, lease_s=3 * settings.provider_timeout_s, lag=lateness
    )

    book = infra.outbox_writers(PostgresOrderBook)()

    async def place(group: Sequence[handlers.PlaceOrder]) -> list[handlers.Placed]:
        return await handlers.handle_place_orders(group, book=book, clock=clock, queries=policy)

    skew, payers = timedelta(seconds=settings.max_clock_skew_s), settings.payers()
    simulated = settings.simulated_providers  # none outside development

    async def pay(group: Sequence[Callback]) -> list[CallbackResult]:
        results = await handle_callbacks(
            group,
            secrets=simulated,
            uow=uow,
            clock=clock,
            payers=payers,
            review=review,
            providers=providers,
            max_skew=skew,
        )
        arrived = clock.now()
        for callback, result in zip(group, results, strict=True):
            if result.paid_at_clamped:
                metrics.clamped(callback.provider)
            if result.paid_at is not None:
                placed = None if result.placed_at is None else result.placed_at.timestamp()
                lateness.observe(arrived, result.paid_at.timestamp(), placed)
        return results

    async def find_order(order_id: str) -> Order | None:
        return await read_order(infra.pool, order_id)

    links, base_url = status_links(settings), settings.status_base_url

    def status_url(order: Order) -> str | None:
        if base_url is None:
            return None
        return links.url(base_url, order.order_id, order.user_id, ttl_s=settings.status_link_ttl_s)

    window, most = settings.group_window_ms / 1000, settings.group_max
    orders = GroupCommit(place, name="orders", window_s=window, max_group=most)
    callbacks = GroupCommit(pay, name="callbacks", window_s=window, max_group=most)
    app = create_app(
        title="credited payments",
        version="1",
        registry=infra.registry,
        readiness=infra.readiness,
        max_body_bytes=settings.max_body_bytes,
    )
    app.state.providers = providers
    # Fewer queries in flight than a provider's connections: one waiting for a connection spends its timeout, and
    # the connections left over are for refunds (transport.KEPT_FROM_QUERIES).
    worker = QueryWorker(deps, batch=settings.query_batch, idle_s=settings.query_idle_s, asking=QUERIES_IN_FLIGHT)
    app.state.query_worker = worker
    app.state.refund_follow_up = refunds.RefundFollowUp(
        uow, providers, ask_timeout_s=settings.provider_timeout_s, observer=metrics
    )
    protect(app, infra.authenticator)
    app.include_router(
        routes(
            uow=uow,
            orders=orders,
            callbacks=callbacks,
            find_order=find_order,
            metrics=metrics,
            clock=clock,
            status_url=status_url,
            settlements=settings.settlements(),
        )
    )
    app.include_router(case_routes(case_book))
    app.state.case_watch = CaseWatch(
        infra.pool, case_metrics, repage_after_s=settings.case_repage_after_s, tick_s=settings.case_watch_interval_s
    )
    books = PostgresAuditBooks(infra.pool, uow)
    auditor = _auditor(settings, books, AuditMetrics(infra.registry))
    app.state.auditor = auditor
    app.include_router(audit_routes(books, auditor))
    neighbours = Neighbours(
        ledger_url=settings.audit_ledger_url,
        reconciler_url=settings.reconciler_url,
        notifier_url=settings.notifier_url,
        timeout_s=settings.support_timeout_s,
    )
    app.include_router(key_routes())
    app.include_router(support_routes(PostgresSupportBooks(infra.pool, uow), neighbours))
    app.state.retention = _retention(settings, infra)
    if settings.fast_path:
        own_form = providers.names.difference(simulated)
        hot = fast_routes(
            orders=orders,
            callbacks=callbacks,
            metrics=metrics,
            authenticator=infra.authenticator,
            status_url=status_url,
            own_form=own_form,
            settlements=settings.settlements(),
        )
        app.add_middleware(FastPath, routes=hot, metrics=ServiceMetrics.on(infra.registry))
    return infra, app


def _auditor(settings: Settings, books: PostgresAuditBooks, metrics: AuditMetrics) -> Auditor | None:
    """The money audit, if payments is told where the ledger is (and the key to read it with)."""
    if settings.audit_ledger_url is None or settings.audit_ledger_api_key is None:
        return None
    credits = LedgerCredits(settings.audit_ledger_url, settings.audit_ledger_api_key.get_secret_value())
    return Auditor(
        books,
        credits,
        metrics,
        interval_s=settings.audit_interval_s,
        window_s=settings.audit_window_s,
        grace_s=settings.audit_grace_s,
        max_skew_s=settings.max_clock_skew_s,
    )


REFUSED_UNREAD = f"outcome = '{Outcome.REJECTED.value}' AND order_id IS NULL"
"""The refused callbacks nothing was read from (a signature that failed, a body that is no callback): what anyone can
post. A refused callback that names an order passed its provider's signature: the provider's word about an order
(a second charge, another amount, an order we never had), money to follow up, kept like accepted ones."""


def _retention(settings: Settings, infra: Infrastructure) -> Retention:
    """payments' own tables that only grow, pruned past their keep times: refused callbacks nothing was read from
    and order Idempotency-Keys. The processed events are pruned by `infra.run`."""
    return Retention(
        infra.pool,
        Pruned("refused callbacks", "callbacks", "received_at", settings.refused_callbacks_keep_s, only=REFUSED_UNREAD),
        Pruned("idempotency keys", "idempotency_keys", "created_at", settings.idempotency_keys_keep_s),
    )
