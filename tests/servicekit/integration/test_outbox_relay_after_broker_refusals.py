"""The outbox relay when the broker refuses a record for good, and when its producer can no longer send, on Apache
Kafka (servicekit.outbox, servicekit.kafka.KafkaPublisher)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from contracts.codec import Record, encode, envelope_for
from contracts.topics import Topic
from servicekit.outbox import OutboxRelay, add_to_outbox
from servicekit.retrying import Readiness
from tests.conftest import Broker
from tests.kafka_reader import read_until
from tests.servicekit.events import paid
from tests.servicekit.refusals import (
    SMALL_LIMIT,
    create_small_topic,
    raise_limit,
    small_dead_letters,
    started_publisher,
    until,
)


@pytest.fixture
async def kit(broker: Broker, database_url: str, isolation: str) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    async with small_dead_letters(broker, database_url, isolation) as made:
        yield made


async def test_the_relay_publishes_a_refused_row_once_the_broker_side_is_fixed(
    kit: tuple[asyncpg.Pool, str], broker: Broker
) -> None:
    """The OutboxBacklog runbook says: fix the broker side (here the topic's max.message.bytes was below the event's
    size), and the relay retries by itself. It did not: the refusal left the long-lived producer's sequence number
    for that partition ahead of the broker's, so every later send to that partition was refused with
    OutOfOrderSequenceNumber for as long as the process lived: the refused row itself once the topic took it, and
    every event of every order on that partition after it, while the service still answered ready."""
    pool, prefix = kit
    topic = f"{prefix}small.events"
    await create_small_topic(broker.bootstrap, topic)
    publisher = await started_publisher(broker, prefix)
    readiness = Readiness()
    relay_obj = OutboxRelay(pool, publisher, poll_interval_s=0.2, readiness=readiness)
    relay = asyncio.create_task(relay_obj.run())
    try:
        async with pool.acquire() as conn:
            await add_to_outbox(conn, [(topic, Record(key=b"ord_before", value=b"ok", headers=[]))])
        relay_obj.wake()
        await until(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"), "the first row published", 30)
        async with pool.acquire() as conn:
            await add_to_outbox(conn, [(topic, Record(key=b"ord_large", value=b"x" * (2 * SMALL_LIMIT), headers=[]))])
        relay_obj.wake()
        await asyncio.sleep(2)  # refused, and retried a few times
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 1
        await raise_limit(broker.bootstrap, topic)
        # The refused row, set aside, is sent alone again after a pause: a row committed meanwhile may go first (the
        # relay holds no row back behind a refused one), so the later one is written once the refused one went.
        await until(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"), "the refused row published", 20)
        async with pool.acquire() as conn:
            await add_to_outbox(conn, [(topic, Record(key=b"ord_later", value=b"ok", headers=[]))])
        relay_obj.wake()
        await until(
            lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"),
            f"the outbox drained after the fix (still ready: {readiness.ready}, report {readiness.report()})",
            20,
        )
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        await publisher.stop()
    records = await read_until(broker.bootstrap, topic, lambda r: len(r) >= 3, timeout_s=30)
    assert [r.key for r in records] == [b"ord_before", b"ord_large", b"ord_later"]


async def test_a_row_the_broker_refuses_for_good_does_not_hold_back_the_rows_committed_after_it(
    kit: tuple[asyncpg.Pool, str], broker: Broker
) -> None:
    """One event the broker refuses for good (here: larger than its topic's max.message.bytes) must not keep every
    other event of the outbox from leaving it. The relay claimed the refused row with the rows after it, the whole
    batch failed with the one refusal, every row was given back, and the same batch was claimed and sent again every
    poll, forever: the other rows reached the broker again and again but never left the outbox. Now the rows the
    broker took leave it, once each, and the refused one stays, set aside and named by a dead letter."""
    pool, prefix = kit
    small = f"{prefix}small.events"
    await create_small_topic(broker.bootstrap, small)
    topic = Topic.PAYMENTS_EVENTS.qualified(prefix)
    publisher = await started_publisher(broker, prefix)
    readiness = Readiness()
    relay = asyncio.create_task(OutboxRelay(pool, publisher, poll_interval_s=0.5, readiness=readiness).run())
    orders = [f"ord_after_{i}" for i in range(5)]
    try:
        async with pool.acquire() as conn, conn.transaction():
            await add_to_outbox(conn, [(small, Record(key=b"ord_large", value=b"x" * (2 * SMALL_LIMIT), headers=[]))])
            events = [(topic, encode(paid(o), envelope_for(paid(o), producer="test"))) for o in orders]
            await add_to_outbox(conn, events)
        large_id = await pool.fetchval("SELECT min(id) FROM outbox")
        await asyncio.sleep(5)
        left = [bytes(r["key"]).decode() for r in await pool.fetch("SELECT key FROM outbox ORDER BY id")]
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        await publisher.stop()
    records = await read_until(broker.bootstrap, topic, lambda r: len(r) >= len(orders), timeout_s=30)
    copies = {o: sum(1 for r in records if r.key == o.encode()) for o in orders}
    assert left == ["ord_large"], (
        f"after 5 s the outbox still holds {left}; each event after the refused one reached the broker {copies}"
        f" times; readiness ready={readiness.ready} {readiness.report()}"
    )
    assert set(copies.values()) == {1}
    dead = await read_until(broker.bootstrap, Topic.DEAD_LETTER.qualified(prefix), lambda r: len(r) >= 1)
    assert [r.key for r in dead] == [b"ord_large"]  # once, though it is retried
    headers = dict(dead[0].headers)
    assert headers["dlq_source"] == b"outbox relay"
    assert headers["dlq_outbox_id"] == str(large_id).encode()
    assert headers["dlq_outbox_topic"] == small.encode()
    assert b"MessageSizeTooLarge" in headers["dlq_reason"]


async def test_the_relay_publishes_again_after_the_producers_sender_task_died(
    kit: tuple[asyncpg.Pool, str], broker: Broker
) -> None:
    """aiokafka's producer does its sending in one background task; when that task ends with an error ("Unexpected
    error in sender routine", aio-libs/aiokafka#907, open: it happens in production after thousands of sends) the
    producer fails every later send with the same KafkaError and never recovers. KafkaPublisher kept that producer
    for the life of the process, so no event of the service left its outbox while /healthz answered ready. Here
    the sender task is made to fail once by a patched produce request, the state that bug leaves."""
    pool, prefix = kit
    topic = Topic.PAYMENTS_EVENTS.qualified(prefix)
    publisher = await started_publisher(broker, prefix)
    readiness = Readiness()
    relay_obj = OutboxRelay(pool, publisher, poll_interval_s=0.2, readiness=readiness)
    relay = asyncio.create_task(relay_obj.run())

    async def write(order_id: str) -> None:
        async with pool.acquire() as conn:
            await add_to_outbox(conn, [(topic, encode(paid(order_id), envelope_for(paid(order_id), producer="t")))])
        relay_obj.wake()

    try:
        await write("ord_before")
        await until(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"), "the first row published", 30)
        sender = publisher._producer._sender

        async def broken(node_id: int, batches: object) -> None:
            raise RuntimeError("what aiokafka#907 hits inside the sender routine")

        async def dead() -> bool:
            return bool(sender.sender_task.done())

        sender._send_produce_req = broken
        await write("ord_during")  # kills the sender task
        await until(dead, "the sender task dead", 10)
        del sender._send_produce_req
        await write("ord_after")
        await until(
            lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"),
            f"the outbox drained with a fresh producer (ready={readiness.ready} {readiness.report()})",
            20,
        )
        assert publisher._producer._sender is not sender
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        with contextlib.suppress(Exception):
            await publisher.stop()
    records = await read_until(broker.bootstrap, topic, lambda r: len(r) >= 3, timeout_s=30)
    assert {r.key for r in records} >= {b"ord_during", b"ord_after"}


async def test_the_probe_replaces_a_producer_whose_sender_task_died(
    kit: tuple[asyncpg.Pool, str], broker: Broker
) -> None:
    """/healthz's broker probe asked for metadata, which a producer whose sender task died still answers: the service
    stayed ready while it could send nothing. The probe now puts a fresh producer in its place, or raises."""
    _, prefix = kit
    publisher = await started_publisher(broker, prefix)
    try:
        sender = publisher._producer._sender
        sender.sender_task.cancel()
        await asyncio.gather(sender.sender_task, return_exceptions=True)
        await publisher.probe()
        assert publisher._producer._sender is not sender
        await publisher.publish(Topic.PAYMENTS_EVENTS.qualified(prefix), Record(key=b"ord_1", value=b"v", headers=[]))
    finally:
        await publisher.stop()


async def test_a_row_larger_than_any_request_is_set_aside_and_the_rows_after_it_go(
    kit: tuple[asyncpg.Pool, str], broker: Broker
) -> None:
    """A row larger than the producer's max_request_size (1 MB) is refused before it reaches the broker, by the send
    itself: it must be set aside like one the broker refused, not fail the handing over of its whole batch."""
    pool, prefix = kit
    topic = Topic.PAYMENTS_EVENTS.qualified(prefix)
    publisher = await started_publisher(broker, prefix)
    relay = asyncio.create_task(OutboxRelay(pool, publisher, poll_interval_s=0.2).run())
    try:
        async with pool.acquire() as conn, conn.transaction():
            await add_to_outbox(conn, [(topic, Record(key=b"ord_huge", value=b"x" * 1_100_000, headers=[]))])
            await add_to_outbox(conn, [(topic, encode(paid("ord_next"), envelope_for(paid("ord_next"), producer="t")))])
        await until(
            lambda: pool.fetchval("SELECT count(*) = 1 AND bool_and(refusals >= 2) FROM outbox"),
            "only the huge row left, set aside",
            20,
        )
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        await publisher.stop()
    records = await read_until(broker.bootstrap, topic, lambda r: len(r) >= 1, timeout_s=30)
    assert [r.key for r in records] == [b"ord_next"]
