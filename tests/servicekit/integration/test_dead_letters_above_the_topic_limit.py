"""Dead letters larger than the dead-letter topic's own max.message.bytes, on Apache Kafka: each goes trimmed, after
or beside others, and the consumer goes on (servicekit.kafka.DeadLetterPublisher, KafkaPublisher)."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from contracts.base import Message
from contracts.codec import Envelope, encode, envelope_for
from contracts.topics import Topic
from servicekit.consumer import KafkaConsumerLoop
from servicekit.kafka import DeadLetterPublisher, KafkaPublisher, per_message
from tests.conftest import Broker
from tests.kafka_reader import read_until
from tests.servicekit.events import paid
from tests.servicekit.refusals import SMALL_LIMIT, small_dead_letters, started_publisher, undecodable


@pytest.fixture
async def kit(broker: Broker, database_url: str, isolation: str) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    async with small_dead_letters(broker, database_url, isolation) as made:
        yield made


def consumer(broker: Broker, prefix: str, publisher: KafkaPublisher, handled: list[str]) -> KafkaConsumerLoop:
    async def handler(message: Message, envelope: Envelope) -> None:
        handled.append(message.order_id)

    return KafkaConsumerLoop(
        bootstrap=broker.bootstrap,
        group_id=f"{prefix}g",
        topics=[Topic.PAYMENTS_EVENTS.qualified(prefix)],
        handler=per_message(handler),
        dead_letters=DeadLetterPublisher(publisher),
    )


async def test_a_dead_letter_too_large_for_its_topic_goes_trimmed_after_earlier_letters_and_the_consumer_keeps_going(
    kit: tuple[asyncpg.Pool, str], broker: Broker
) -> None:
    """A consumer that has already dead-lettered one record and then meets a record too large for the dead-letter
    topic's own limit must send its letter trimmed and go on (DeadLetterPublisher promises exactly that). The
    broker's refusal of the large letter left the idempotent producer's sequence number for that partition past
    what the broker holds, so the trimmed letter was refused with OutOfOrderSequenceNumber, the consumer loop died,
    and every later message of its partitions (payments, credits) waited behind it."""
    _, prefix = kit
    publisher = await started_publisher(broker, prefix)
    source = Topic.PAYMENTS_EVENTS.qualified(prefix)
    handled: list[str] = []
    loop = consumer(broker, prefix, publisher, handled)
    await loop.start()
    task = asyncio.create_task(loop.run())
    dead_topic = Topic.DEAD_LETTER.qualified(prefix)
    try:
        await publisher.publish(source, undecodable(b"ord_small_bad", 10))
        await read_until(broker.bootstrap, dead_topic, lambda r: len(r) >= 1, timeout_s=30)
        # Fits its own topic (1 MB), not the dead-letter topic's 4 KB.
        await publisher.publish(source, undecodable(b"ord_large_bad", 3 * SMALL_LIMIT))
        good = paid("ord_after")
        await publisher.publish(source, encode(good, envelope_for(good, producer="test")))
        deadline = asyncio.get_running_loop().time() + 30
        while "ord_after" not in handled and not task.done():
            assert asyncio.get_running_loop().time() < deadline, "the good message after the large one never came"
            await asyncio.sleep(0.05)
        assert not task.done(), f"the consumer stopped: {task.exception()!r}"
        dead = await read_until(broker.bootstrap, dead_topic, lambda r: len(r) >= 2, timeout_s=30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await loop.stop()
        await publisher.stop()
    assert [r.key for r in dead] == [b"ord_small_bad", b"ord_large_bad"]
    assert dead[1].value == b""  # trimmed


async def test_a_poll_with_a_small_and_a_too_large_bad_record_is_dead_lettered_by_a_freshly_started_consumer(
    kit: tuple[asyncpg.Pool, str], broker: Broker
) -> None:
    """Two bad records in one poll, one of them too large for the dead-letter topic's own limit, handled by a
    consumer whose producer has never written to the dead-letter topic (a service just (re)started). The publisher
    sends both letters together (refused for the large one), then each alone (the small one is taken), then the
    large one (refused) and its trimmed form: the broker refused that with OutOfOrderSequenceNumber, because the
    refused sends moved the producer's sequence number past the broker's. The consumer loop died; restarted, it
    read the same poll and died the same way, for ever: no message of its partitions was ever handled again."""
    _, prefix = kit
    source = Topic.PAYMENTS_EVENTS.qualified(prefix)
    writer = await started_publisher(broker, prefix)
    try:
        for record in (undecodable(b"ord_small_bad", 10), undecodable(b"ord_small_bad", 3 * SMALL_LIMIT)):
            await writer.publish(source, record)  # one key: one partition, one poll
        good = paid("ord_small_bad")
        await writer.publish(source, encode(good, envelope_for(good, producer="test")))
    finally:
        await writer.stop()
    publisher = await started_publisher(broker, prefix)  # the restarted service's: it never wrote a dead letter
    handled: list[str] = []
    loop = consumer(broker, prefix, publisher, handled)
    await loop.start()
    task = asyncio.create_task(loop.run())
    try:
        # The good message is handled before the poll's dead letters are sent: wait for the poll's commit.
        deadline = asyncio.get_running_loop().time() + 30
        while loop.consumed_total < 3 and not task.done():
            assert asyncio.get_running_loop().time() < deadline, "the poll with the bad records was never committed"
            await asyncio.sleep(0.05)
        assert not task.done(), f"the consumer stopped: {task.exception()!r}"
        assert handled == ["ord_small_bad"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await loop.stop()
        await publisher.stop()
    dead = await read_until(broker.bootstrap, Topic.DEAD_LETTER.qualified(prefix), lambda r: len(r) >= 2)
    assert sorted(len(r.value) for r in dead) == [0, 11]  # the large one trimmed, the small one whole
