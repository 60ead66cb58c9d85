"""The composition root of the notifier: the only place that builds adapters."""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from fastapi import FastAPI
from yarl import URL

from contracts.events import OrderExpired, OrderStatusChanged
from contracts.topics import Topic
from notifier import handlers
from notifier.adapters.delivery import DeliveryWorker, InFlightLimit, RetryPolicy
from notifier.adapters.fcm import fcm_channel
from notifier.adapters.feed import PostgresOrderFeed
from notifier.adapters.http import PushOptions, routes
from notifier.adapters.metrics import PrometheusNotifierMetrics
from notifier.adapters.poster import AiohttpPoster
from notifier.adapters.postgres import PostgresNotifications
from notifier.adapters.queue import PostgresDeliveryQueue
from notifier.adapters.retention import notification_retention
from notifier.adapters.status_page import StatusPage
from notifier.adapters.streams import StreamSlots
from notifier.adapters.subscriptions import PostgresSubscriptions
from notifier.adapters.webhook import WebhookChannel
from notifier.adapters.webpush import VapidSigner, WebPushChannel
from notifier.config import Settings
from notifier.ports import DeliveryChannel
from servicekit.http import create_app
from servicekit.identity import protect
from servicekit.infrastructure import Infrastructure
from servicekit.kafka import only
from servicekit.links import StatusLinks, status_links
from servicekit.retention import Retention

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
SERVICE = "notifier"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Channels:
    """The configured channels by name, the limits of their deliveries in flight, and the posters to close."""

    by_name: dict[str, DeliveryChannel]
    limits: list[InFlightLimit]
    posters: list[AiohttpPoster]


@dataclass
class Notifier:
    """The running parts: infrastructure, the HTTP app, the delivery worker, the status pages' feed and the pruning
    of notifications past their keep time."""

    infra: Infrastructure
    app: FastAPI
    worker: DeliveryWorker
    feed: PostgresOrderFeed
    uow: Callable[[], PostgresNotifications]
    posters: list[AiohttpPoster]
    retention: Retention

    async def close(self) -> None:
        for poster in self.posters:
            await poster.close()
        await self.infra.close()


def vapid_signer(settings: Settings) -> VapidSigner:
    if settings.vapid_private_key is not None:
        return VapidSigner.from_setting(settings.vapid_private_key.get_secret_value(), settings.vapid_subject)
    log.warning(
        "NOTIFIER_VAPID_PRIVATE_KEY is not set: using a key made for this run; browsers must subscribe again"
        " after a restart"
    )
    return VapidSigner.generate(settings.vapid_subject)


def channels(settings: Settings, signer: VapidSigner, links: StatusLinks) -> Channels:
    """Each channel with its own limit of deliveries in flight, the size of its connection pool: a hung webhook fills
    its own (NOTIFIER_WEBHOOK_CONNECTIONS), never the users' pushes' slots. Web Push and FCM share a pool (and the
    limit, `max_in_flight`): a limit of their own each, past the pool they share, would have deliveries hold a slot
    waiting for a connection."""
    policy = settings.address_policy
    push_poster = AiohttpPoster(
        timeout_s=settings.push_timeout_s, policy=policy, max_connections=settings.max_in_flight
    )
    built: dict[str, DeliveryChannel] = {
        "webpush": WebPushChannel(
            signer,
            push_poster,
            ttl_s=settings.webpush_ttl_s,
            allowed_hosts=frozenset(settings.webpush_allowed_hosts),
            allow_http=settings.webpush_allow_http,
            page_url=settings.public_url,
            links=links,
            link_ttl_s=settings.status_link_ttl_s,
        )
    }
    posters = [push_poster]
    limits: list[InFlightLimit] = []
    if settings.webhook_url:
        refusal = policy.url_refusal(URL(settings.webhook_url))
        if refusal is not None:  # its host name is checked on each connection, where a refusal fails the delivery
            raise ValueError(f"NOTIFIER_WEBHOOK_URL is refused: {refusal}")
        webhook_poster = AiohttpPoster(
            timeout_s=settings.webhook_timeout_s, policy=policy, max_connections=settings.webhook_connections
        )
        built["webhook"] = WebhookChannel(settings.webhook_url, settings.webhook_secret, webhook_poster)
        posters.append(webhook_poster)
        limits.append(InFlightLimit(frozenset({"webhook"}), webhook_poster.max_connections))
    fcm = fcm_channel(
        settings.fcm_service_account_file,
        settings.fcm_endpoint,
        settings.fcm_bearer_token.get_secret_value(),
        push_poster,
        ttl_s=settings.webpush_ttl_s,
    )
    if fcm is not None:
        built["fcm"] = fcm
    pushes = frozenset(name for name in built if name != "webhook")
    limits.append(InFlightLimit(pushes, push_poster.max_connections))
    return Channels(built, limits, posters)


async def build(settings: Settings, *, connect: bool = True) -> Notifier:
    """The notifier's parts; connected to PostgreSQL and the broker unless `connect` is False (then
    `Infrastructure.run` connects while /healthz already answers)."""
    infra = await Infrastructure.open(SERVICE, settings, MIGRATIONS, connect=connect)
    signer = vapid_signer(settings)
    links = status_links(settings)
    configured = channels(settings, signer, links)
    by_name = configured.by_name
    worker = DeliveryWorker(
        PostgresDeliveryQueue(infra.pool),
        by_name,
        infra.publisher,
        policy=RetryPolicy(
            settings.max_attempts, settings.base_backoff_s, settings.max_backoff_s, retry_for_s=settings.retry_for_s
        ),
        metrics=PrometheusNotifierMetrics(infra.registry, channels=by_name),
        lease_s=settings.lease_s,
        max_in_flight=settings.max_in_flight,
        limits=configured.limits,
    )

    def uow() -> PostgresNotifications:
        return PostgresNotifications(
            infra.pool,
            producer=SERVICE,
            topic_prefix=settings.topic_prefix,
            schema=settings.db_schema,
            webhook="webhook" in by_name,
            lease_s=settings.lease_s,
            on_commit=worker.wake,
            on_leased=worker.hand_over,
        )

    locks = partial(handlers.lock_orders, uow=uow)  # a failed poll's orders, before it is retried one at a time
    infra.consume(
        "notifier.order-status",
        [Topic.ORDERS_STATUS],
        only({OrderStatusChanged}, partial(handlers.handle_status_changes, uow=uow), lock_orders=locks),
    )
    infra.consume(
        "notifier.payments",
        [Topic.PAYMENTS_EVENTS],
        only({OrderExpired}, partial(handlers.handle_expired_orders, uow=uow), lock_orders=locks),
    )
    subscriptions = PostgresSubscriptions(
        infra.pool,
        settings.address_policy,
        max_per_user=settings.max_subscriptions_per_user,
        max_link_per_order=settings.max_link_subscriptions_per_order,
    )
    feed = PostgresOrderFeed(settings.database_url, settings.db_schema)
    push = PushOptions(
        vapid_public_key=signer.public_key,
        allowed_hosts=frozenset(settings.webpush_allowed_hosts),
        allow_http=settings.webpush_allow_http,
        fcm_enabled="fcm" in by_name,
    )
    app = create_app(
        title="credited notifier",
        version="1",
        registry=infra.registry,
        readiness=infra.readiness,
        max_body_bytes=settings.max_body_bytes,
    )
    protect(app, infra.authenticator)
    app.include_router(routes(uow, subscriptions, push))
    slots = StreamSlots(per_order=settings.max_streams_per_order, overall=settings.max_streams)
    page = StatusPage(uow, subscriptions, feed, links, push, slots, heartbeat_s=settings.sse_heartbeat_s)
    app.include_router(page.routes())
    retention = notification_retention(infra.pool, settings.notifications_keep_s)
    return Notifier(infra, app, worker, feed, uow, configured.posters, retention)
