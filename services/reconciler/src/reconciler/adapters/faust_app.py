"""The faust-streaming side of the reconciler: the app, its table, the agent and the web pages.

faust lives only here. The agent decodes each record at the edge and calls the pure handlers; records
that do not decode go to the dead-letter topic with the reason.
"""

import logging
from datetime import UTC, datetime
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from contracts.codec import DecodeError, decode, deterministic_id, encode, envelope_for
from contracts.events import OrderStatusChanged
from contracts.topics import Topic
from reconciler.config import Settings
from reconciler.domain import OrderState, StatusChange
from reconciler.handlers import handle_event

log = logging.getLogger(__name__)

SERVICE = "reconciler"


class FaustOrderStates:
    """OrderStates on a faust table (changelog-backed, partitioned like the input topics)."""

    def __init__(self, table: faust.Table) -> None:
        self._table = table

    def get(self, order_id: str) -> OrderState | None:
        raw = self._table.get(order_id)
        return None if raw is None else OrderState.from_json(raw)

    def put(self, state: OrderState) -> None:
        self._table[state.order_id] = state.to_json()


class FaustStatusPublisher:
    """Publishes OrderStatusChanged and waits for the broker's acknowledgement."""

    def __init__(self, topic: faust.TopicT) -> None:
        self._topic = topic

    async def publish(self, state: OrderState, change: StatusChange) -> None:
        assert state.paid_at is not None
        message = OrderStatusChanged(
            order_id=state.order_id,
            user_id=state.user_id,
            status=change.status,
            sequence=change.sequence,
            previous_status=change.previous,
            reason=change.reason,
            amount=state.amount,
            currency=state.currency,
            channel=state.channel or "unknown",
            paid_at=state.paid_at,
            credited_at=state.credited_at,
            changed_at=datetime.now(UTC),
        )
        envelope = envelope_for(
            message,
            producer=SERVICE,
            event_id=deterministic_id("OrderStatusChanged", state.order_id, str(change.sequence)),
        )
        record = encode(message, envelope)
        sent = await self._topic.send(key=record.key, value=record.value, headers=record.headers)
        await sent


def build_app(settings: Settings, registry: CollectorRegistry) -> faust.App:
    """The faust app with one agent joining payments.events and ledger.events by order id."""
    prefix = settings.topic_prefix
    app = faust.App(
        f"{prefix}credited-reconciler",
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        web_enabled=True,
        web_host=settings.http_host,
        web_port=settings.http_port,
        web_bind=settings.http_host,
        table_standby_replicas=0,
        # Tansu holds every group join for half the session timeout (faust's 60 s default: 30 s).
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=settings.session_timeout_s,
        broker_commit_interval=1.0,
        topic_disable_leader=True,
    )
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic(Topic.PAYMENTS_EVENTS.qualified(prefix), Topic.LEDGER_EVENTS.qualified(prefix), **raw)
    status_topic = app.topic(Topic.ORDERS_STATUS.qualified(prefix), **raw)
    dead_letters = app.topic(Topic.DEAD_LETTER.qualified(prefix), **raw)
    table = app.Table(
        "order-state",
        default=None,
        partitions=settings.topic_partitions,
        schema=faust.Schema(key_serializer="raw", value_serializer="json"),
    )
    states = FaustOrderStates(table)
    publisher = FaustStatusPublisher(status_topic)

    @app.agent(source)
    async def join(stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            try:
                message, envelope = decode(event.value, list(msg.headers or []))
            except DecodeError as exc:
                log.error("dead-lettering %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, exc.reason)
                headers = [(k, v) for k, v in (msg.headers or [])] + [
                    ("dlq_reason", f"undecodable: {exc.reason}".encode()),
                    ("dlq_source_topic", msg.topic.encode()),
                    ("dlq_source_partition", str(msg.partition).encode()),
                    ("dlq_source_offset", str(msg.offset).encode()),
                    ("dlq_consumer_group", app.conf.id.encode()),
                ]
                await (await dead_letters.send(key=msg.key or b"", value=event.value or b"", headers=headers))
                continue
            await handle_event(message, envelope, states=states, publisher=publisher)

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    return app
