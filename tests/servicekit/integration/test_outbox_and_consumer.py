"""The outbox relay and the consumer loop against the real broker and the real PostgreSQL."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from contracts.base import Message
from contracts.codec import Envelope, Record, encode, envelope_for
from contracts.topics import Topic
from servicekit.consumer import KafkaConsumerLoop
from servicekit.kafka import DeadLetterPublisher, KafkaPublisher, PermanentFailure, ensure_topics, per_message
from servicekit.outbox import OutboxRelay, add_to_outbox
from servicekit.postgres import create_pool, migrate
from servicekit.uow import PostgresUnitOfWork, batch, no_relay, savepoint
from tests.conftest import Broker
from tests.kafka_reader import event_types, read_until
from tests.servicekit.events import paid


@pytest.fixture
async def kit(
    broker: Broker, database_url: str, isolation: str
) -> AsyncIterator[tuple[asyncpg.Pool, KafkaPublisher, str]]:
    prefix = f"{isolation}."
    await ensure_topics(broker.bootstrap, [t.qualified(prefix) for t in Topic], 3)
    pool = await create_pool(database_url, isolation)
    await migrate(pool)
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test", topic_prefix=prefix)
    await publisher.start()
    yield pool, publisher, prefix
    await publisher.stop()
    await pool.close()


def uow(pool: asyncpg.Pool, prefix: str) -> PostgresUnitOfWork:
    return PostgresUnitOfWork(pool, producer="test", topic_prefix=prefix, on_commit=no_relay)


async def test_committed_events_are_published_and_rolled_back_ones_never(kit, broker: Broker) -> None:  # type: ignore[no-untyped-def]
    pool, publisher, prefix = kit
    async with uow(pool, prefix) as tx:
        tx.publish(Topic.PAYMENTS_EVENTS, paid("ord_commit"))
    with contextlib.suppress(RuntimeError):
        async with uow(pool, prefix) as tx:
            tx.publish(Topic.PAYMENTS_EVENTS, paid("ord_rollback"))
            raise RuntimeError("the state change failed")
    relay = OutboxRelay(pool, publisher)
    assert await relay.publish_batch() == 1
    records = await read_until(broker.bootstrap, Topic.PAYMENTS_EVENTS.qualified(prefix), lambda r: len(r) >= 1)
    assert [r.key for r in records] == [b"ord_commit"]
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_events_committed_while_no_relay_ran_are_published_when_one_starts(kit, broker: Broker) -> None:  # type: ignore[no-untyped-def]
    pool, publisher, prefix = kit
    for i in range(20):
        async with uow(pool, prefix) as tx:
            tx.publish(Topic.PAYMENTS_EVENTS, paid(f"ord_{i}"))
    relay_task = asyncio.create_task(OutboxRelay(pool, publisher, batch_size=7).run())
    try:
        records = await read_until(broker.bootstrap, Topic.PAYMENTS_EVENTS.qualified(prefix), lambda r: len(r) >= 20)
    finally:
        relay_task.cancel()
        await asyncio.gather(relay_task, return_exceptions=True)
    assert sorted(r.key for r in records) == sorted(f"ord_{i}".encode() for i in range(20))


async def test_two_relays_at_once_neither_skip_nor_duplicate(kit, broker: Broker) -> None:  # type: ignore[no-untyped-def]
    pool, publisher, prefix = kit
    writers = []
    for w in range(4):

        async def write(w: int = w) -> None:
            for i in range(50):
                async with uow(pool, prefix) as tx:
                    tx.publish(Topic.PAYMENTS_EVENTS, paid(f"ord_{w}_{i}"))

        writers.append(write())
    relays = [
        asyncio.create_task(OutboxRelay(pool, publisher, batch_size=5, poll_interval_s=0.05).run()) for _ in range(2)
    ]
    try:
        await asyncio.gather(*writers)
        records = await read_until(broker.bootstrap, Topic.PAYMENTS_EVENTS.qualified(prefix), lambda r: len(r) >= 200)
        await asyncio.sleep(0.5)  # give a wrongly duplicated publish the chance to show up
        records = await read_until(broker.bootstrap, Topic.PAYMENTS_EVENTS.qualified(prefix), lambda r: len(r) >= 200)
    finally:
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)
    keys = [r.key for r in records]
    assert len(keys) == 200 and len(set(keys)) == 200


async def test_a_bad_message_goes_to_the_dead_letter_topic_and_the_consumer_keeps_going(kit, broker: Broker) -> None:  # type: ignore[no-untyped-def]
    pool, publisher, prefix = kit
    topic = Topic.PAYMENTS_EVENTS.qualified(prefix)
    handled: list[str] = []

    async def handler(message: Message, envelope: Envelope) -> None:
        if message.order_id == "ord_poison":
            raise PermanentFailure("order ord_poison breaks a rule")
        handled.append(message.order_id)

    await publisher.publish(
        topic, Record(key=b"ord_x", value=b"{not json", headers=[("event_type", b"PaymentSucceeded")])
    )
    for order_id in ("ord_poison", "ord_good"):
        async with uow(pool, prefix) as tx:
            tx.publish(Topic.PAYMENTS_EVENTS, paid(order_id))
    await OutboxRelay(pool, publisher).publish_batch()
    loop = KafkaConsumerLoop(
        bootstrap=broker.bootstrap,
        group_id=f"{prefix}g",
        topics=[topic],
        handler=per_message(handler),
        dead_letters=DeadLetterPublisher(publisher),
    )
    await loop.start()
    task = asyncio.create_task(loop.run())
    try:
        dead = await read_until(broker.bootstrap, Topic.DEAD_LETTER.qualified(prefix), lambda r: len(r) >= 2)
        while "ord_good" not in handled:
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await loop.stop()
    reasons = sorted(dict(r.headers)["dlq_reason"].decode() for r in dead)
    assert reasons[0].startswith("rejected: order ord_poison breaks a rule")
    assert reasons[1].startswith("undecodable: missing headers")
    assert {dict(r.headers)["dlq_source_topic"] for r in dead} == {topic.encode()}
    assert dead[0].value in (b"{not json",) or dead[1].value == b"{not json"
    assert event_types([r for r in dead if r.key == b"ord_poison"]) == ["PaymentSucceeded"]


async def test_a_transaction_that_commits_late_with_a_lower_outbox_id_is_still_published(kit, broker: Broker) -> None:  # type: ignore[no-untyped-def]
    pool, publisher, prefix = kit
    relay = OutboxRelay(pool, publisher)
    topic = Topic.PAYMENTS_EVENTS.qualified(prefix)
    late = paid("ord_late")
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await add_to_outbox(conn, [(topic, encode(late, envelope_for(late, producer="test")))])
        late_id = await conn.fetchval("SELECT max(id) FROM outbox")  # its id is taken now, it commits later
        async with uow(pool, prefix) as tx:
            tx.publish(Topic.PAYMENTS_EVENTS, paid("ord_early"))
        early_id = await pool.fetchval("SELECT max(id) FROM outbox")
        assert late_id < early_id
        assert await relay.publish_batch() == 1  # the relay has moved past the late row's id ...
        await transaction.commit()
    assert await relay.publish_batch() == 1  # ... and still publishes it
    records = await read_until(broker.bootstrap, topic, lambda r: len(r) >= 2)
    assert sorted(r.key for r in records) == [b"ord_early", b"ord_late"]


async def test_a_message_that_fails_after_its_unit_of_work_leaves_no_event_and_the_rest_of_its_poll_commits(  # type: ignore[no-untyped-def]
    kit, broker: Broker
) -> None:
    """The poll's batch fails, so it is handled one message at a time: the bad message's savepoint rolls back its
    processed event id and the event its unit of work queued for the outbox; the others are kept once."""
    pool, publisher, prefix = kit
    topic = Topic.PAYMENTS_EVENTS.qualified(prefix)

    async def handle(message: Message, envelope: Envelope) -> None:
        async with uow(pool, prefix) as tx:
            await tx.mark_processed("g", envelope.event_id)
            tx.publish(Topic.LEDGER_EVENTS, paid(f"{message.order_id}-announced"))
        if message.order_id == "ord_bad":
            raise PermanentFailure("ord_bad fails after its unit of work committed")

    orders = ["ord_a", "ord_bad", "ord_b"]
    await publisher.publish_many([(topic, encode(paid(o), envelope_for(paid(o), producer="test"))) for o in orders])
    loop = KafkaConsumerLoop(
        bootstrap=broker.bootstrap,
        group_id=f"{prefix}g",
        topics=[topic],
        handler=per_message(handle),
        dead_letters=DeadLetterPublisher(publisher),
        batch_scope=lambda: batch(pool),
        message_scope=savepoint,
    )
    await loop.start()
    task = asyncio.create_task(loop.run())
    try:
        dead = await read_until(broker.bootstrap, Topic.DEAD_LETTER.qualified(prefix), lambda r: len(r) >= 1)
        while loop.consumed_total < len(orders):
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await loop.stop()
    assert [r.key for r in dead] == [b"ord_bad"]
    announced = await pool.fetch("SELECT key FROM outbox ORDER BY id")
    assert sorted(bytes(r["key"]) for r in announced) == [b"ord_a-announced", b"ord_b-announced"]
    assert await pool.fetchval("SELECT count(*) FROM processed_events") == 2


async def dead_lettered(kit, broker: Broker, bad: Record) -> list:  # type: ignore[no-untyped-def]
    """`bad` and then a good payment on the payments topic, consumed: the dead letters, once the good one was handled
    (the consumer kept going)."""
    pool, publisher, prefix = kit
    topic = Topic.PAYMENTS_EVENTS.qualified(prefix)
    handled: list[str] = []

    async def handler(message: Message, envelope: Envelope) -> None:
        handled.append(message.order_id)

    await publisher.publish(topic, bad)
    async with uow(pool, prefix) as tx:
        tx.publish(Topic.PAYMENTS_EVENTS, paid("ord_after"))
    await OutboxRelay(pool, publisher).publish_batch()
    loop = KafkaConsumerLoop(
        bootstrap=broker.bootstrap,
        group_id=f"{prefix}g",
        topics=[topic],
        handler=per_message(handler),
        dead_letters=DeadLetterPublisher(publisher),
    )
    await loop.start()
    task = asyncio.create_task(loop.run())
    try:
        while "ord_after" not in handled and not task.done():
            await asyncio.sleep(0.05)
        assert not task.done(), f"the consumer stopped: {task.exception()!r}"
        dead = await read_until(broker.bootstrap, Topic.DEAD_LETTER.qualified(prefix), lambda r: len(r) >= 1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await loop.stop()
    assert handled == ["ord_after"]
    return dead


async def test_a_bad_record_too_large_to_dead_letter_whole_goes_trimmed_and_the_consumer_keeps_going(  # type: ignore[no-untyped-def]
    kit, broker: Broker
) -> None:
    topic = Topic.PAYMENTS_EVENTS.qualified(kit[2])
    # Just under the broker's 1 MB: it was written, but with the dead-letter headers it no longer fits.
    huge = Record(key=b"ord_huge", value=b"x" * 1_048_450, headers=[("event_type", b"PaymentSucceeded")])
    dead = await dead_lettered(kit, broker, huge)
    [letter] = dead
    headers = dict(letter.headers)
    assert letter.key == b"ord_huge" and letter.value == b""
    assert headers["dlq_reason"].decode().startswith("undecodable")
    assert int(headers["dlq_truncated"]) > 1_048_450
    assert (headers["dlq_source_topic"], headers["event_type"]) == (topic.encode(), b"PaymentSucceeded")
    assert headers["dlq_source_partition"].isdigit() and headers["dlq_source_offset"].isdigit()  # the original


async def test_a_record_with_a_header_without_a_value_is_dead_lettered_and_the_consumer_keeps_going(  # type: ignore[no-untyped-def]
    kit, broker: Broker
) -> None:
    """Its event_id has no value (the letter keeps every header, one without a value as empty); another producer's
    header without a value alone would not make it bad (contracts' decode reads only the envelope's headers)."""
    good = encode(paid("ord_null"), envelope_for(paid("ord_null"), producer="test"))
    headers = [(k, None if k == "event_id" else v) for k, v in good.headers] + [("trace", None)]
    bad = Record(key=good.key, value=good.value, headers=headers)  # type: ignore[arg-type]
    [letter] = await dead_lettered(kit, broker, bad)
    kept = dict(letter.headers)
    assert letter.key == b"ord_null" and kept["trace"] == b"" and kept["event_id"] == b""
    assert kept["dlq_reason"] == b"undecodable: header 'event_id' has no value"


async def test_a_record_whose_refusal_quotes_a_huge_event_type_is_dead_lettered_with_the_reason_cut(  # type: ignore[no-untyped-def]
    kit, broker: Broker
) -> None:
    good = encode(paid("ord_weird"), envelope_for(paid("ord_weird"), producer="test"))
    headers = [(k, v) for k, v in good.headers if k != "event_type"] + [("event_type", b"\x01" * 300_000)]
    [letter] = await dead_lettered(kit, broker, Record(key=good.key, value=good.value, headers=headers))
    reason = dict(letter.headers)["dlq_reason"].decode()
    assert letter.key == b"ord_weird" and reason.startswith("undecodable: unknown event_type") and len(reason) < 600
