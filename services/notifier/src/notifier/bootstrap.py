"""The composition root of the notifier: the only place that builds adapters."""

from functools import partial
from pathlib import Path

import httpx
from fastapi import FastAPI

from contracts.events import OrderStatusChanged
from contracts.topics import Topic
from notifier import handlers
from notifier.adapters.delivery import DeliveryWorker
from notifier.adapters.http import routes
from notifier.adapters.postgres import PostgresNotifications
from notifier.adapters.webhook import WebhookChannel
from notifier.config import Settings
from notifier.ports import DeliveryChannel
from servicekit.http import create_app
from servicekit.infrastructure import Infrastructure
from servicekit.kafka import route

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
SERVICE = "notifier"


async def build(settings: Settings) -> tuple[Infrastructure, FastAPI, DeliveryWorker]:
    infra = await Infrastructure.open(SERVICE, settings, MIGRATIONS)
    channels: list[DeliveryChannel] = []
    if settings.webhook_url:
        client = httpx.AsyncClient(timeout=settings.webhook_timeout_s, limits=httpx.Limits(max_connections=50))
        channels.append(WebhookChannel(settings.webhook_url, settings.webhook_secret, client))
    worker = DeliveryWorker(infra.pool, channels, infra.publisher, max_attempts=settings.max_attempts)

    def uow() -> PostgresNotifications:
        return PostgresNotifications(
            infra.pool, producer=SERVICE, topic_prefix=settings.topic_prefix, on_commit=worker.wake
        )

    infra.consume(
        "notifier.order-status",
        [Topic.ORDERS_STATUS],
        route({OrderStatusChanged: partial(handlers.handle_status_changed, uow=uow)}),
    )
    app = create_app(title="credited notifier", version="1", registry=infra.registry)
    app.include_router(routes(uow))
    return infra, app, worker
