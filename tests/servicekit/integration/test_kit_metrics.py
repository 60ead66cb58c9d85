"""The kit's metrics against the real broker and PostgreSQL: records, dead letters, lag and the outbox."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from contracts.base import Message
from contracts.codec import Envelope, Record
from contracts.topics import Topic
from servicekit.consumer import KafkaConsumerLoop
from servicekit.kafka import DeadLetterPublisher, KafkaPublisher, ensure_topics, per_message
from servicekit.metrics import ServiceMetrics
from servicekit.outbox import OutboxRelay
from servicekit.postgres import create_pool, migrate
from servicekit.uow import PostgresUnitOfWork, no_relay
from tests.conftest import Broker
from tests.servicekit.events import paid


@pytest.fixture
async def kit(
    broker: Broker, database_url: str, isolation: str
) -> AsyncIterator[tuple[asyncpg.Pool, KafkaPublisher, str]]:
    prefix = f"{isolation}."
    await ensure_topics(broker.bootstrap, [t.qualified(prefix) for t in Topic], 1)
    pool = await create_pool(database_url, isolation)
    await migrate(pool)
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test", topic_prefix=prefix)
    await publisher.start()
    yield pool, publisher, prefix
    await publisher.stop()
    await pool.close()


async def eventually(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_outbox_and_consumer_report_backlog_records_dead_letters_and_lag(kit, broker: Broker) -> None:  # type: ignore[no-untyped-def]
    pool, publisher, prefix = kit
    registry = CollectorRegistry()
    metrics = ServiceMetrics("ledger", registry)
    relay = OutboxRelay(pool, publisher, metrics=metrics.outbox())
    for order_id in ("ord_1", "ord_2", "ord_3"):
        async with PostgresUnitOfWork(pool, producer="test", topic_prefix=prefix, on_commit=no_relay) as tx:
            tx.publish(Topic.PAYMENTS_EVENTS, paid(order_id))
    await relay.observe_backlog()
    assert registry.get_sample_value("credited_outbox_backlog_records", {"service": "ledger"}) == 3
    assert (registry.get_sample_value("credited_outbox_oldest_age_seconds", {"service": "ledger"}) or 0) >= 0
    await relay.publish_batch()
    await relay.observe_backlog()
    assert registry.get_sample_value("credited_outbox_published_total", {"service": "ledger"}) == 3
    assert registry.get_sample_value("credited_outbox_backlog_records", {"service": "ledger"}) == 0
    topic = Topic.PAYMENTS_EVENTS.qualified(prefix)
    await publisher.publish(topic, Record(key=b"ord_x", value=b"{", headers=[("event_type", b"PaymentSucceeded")]))

    gate = asyncio.Event()
    handled: list[str] = []

    async def handler(message: Message, envelope: Envelope) -> None:
        await gate.wait()
        handled.append(message.order_id)

    loop = KafkaConsumerLoop(
        bootstrap=broker.bootstrap,
        group_id=f"{prefix}ledger.payments",
        topics=[topic],
        handler=per_message(handler),
        dead_letters=DeadLetterPublisher(publisher),
        metrics=metrics.consumer("ledger.payments", [Topic.PAYMENTS_EVENTS.value], prefix),
    )
    labels = {"service": "ledger", "group": "ledger.payments", "topic": "payments.events"}
    lag = {**labels, "partition": "0"}
    await loop.start()
    task = asyncio.create_task(loop.run())
    try:

        async def backlog_seen() -> bool:
            await loop.observe_lag()
            return registry.get_sample_value("credited_consumer_lag_records", lag) == 4

        await eventually(backlog_seen, "the held-up records to show as lag")
        gate.set()

        async def caught_up() -> bool:
            await loop.observe_lag()
            return registry.get_sample_value("credited_consumer_lag_records", lag) == 0 and len(handled) == 3

        await eventually(caught_up, "the consumer to catch up")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await loop.stop()
    assert registry.get_sample_value("credited_consumer_records_total", labels) == 4
    dead = {"service": "ledger", "group": "ledger.payments"}
    assert registry.get_sample_value("credited_dead_letters_total", {**dead, "reason_kind": "undecodable"}) == 1
    assert registry.get_sample_value("credited_dead_letters_total", {**dead, "reason_kind": "rejected"}) == 0
