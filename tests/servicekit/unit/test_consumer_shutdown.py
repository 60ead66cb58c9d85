"""A consumer asked to stop while its database transaction cannot finish stops; it never mistakes the
shutdown for a transient failure to retry. Asked to finish, it handles and commits the poll in hand and returns;
waiting for a poll, it returns at once."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import cast

from aiokafka import TopicPartition

from servicekit.consumer import KafkaConsumerLoop
from servicekit.kafka import BatchHandler, DeadLetterPublisher, Delivery
from tests.servicekit.consumer_fakes import FakeConsumer, polled, record


@contextlib.asynccontextmanager
async def commit_on_a_dead_connection() -> AsyncIterator[None]:
    """Like asyncpg's transaction on a closed connection: cancelled while committing, its exit raises a
    connection error in place of the CancelledError."""
    try:
        yield
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        raise ConnectionResetError("the underlying connection is closed") from None


async def nothing(*_: object) -> None:
    return None


async def test_a_consumer_cancelled_mid_commit_stops_instead_of_retrying_the_batch_forever() -> None:
    loop = KafkaConsumerLoop(
        bootstrap="127.0.0.1:1",  # never started: the batch is processed without a broker
        group_id="g",
        topics=["t"],
        handler=nothing,
        dead_letters=cast(DeadLetterPublisher, None),
        batch_scope=commit_on_a_dead_connection,
    )
    batch = asyncio.create_task(loop.handle_poll(polled(record("ord_1", 0))))
    await asyncio.sleep(0.05)
    batch.cancel()
    await asyncio.wait({batch}, timeout=5)
    assert batch.cancelled(), "the batch kept retrying after it was cancelled"


class HeldUp:
    """A handler that waits until `release` is set, then writes each order to `handled`."""

    def __init__(self) -> None:
        self.started, self.release = asyncio.Event(), asyncio.Event()
        self.handled: list[str] = []

    async def __call__(self, deliveries: Sequence[Delivery]) -> None:
        self.started.set()
        await self.release.wait()
        self.handled += [message.order_id for message, _ in deliveries]


def loop_on(consumer: FakeConsumer, handler: BatchHandler) -> KafkaConsumerLoop:
    loop = KafkaConsumerLoop(
        bootstrap="127.0.0.1:1",  # never started: the fake consumer stands in for the broker
        group_id="g",
        topics=["t"],
        handler=handler,
        dead_letters=cast(DeadLetterPublisher, None),
    )
    loop._consumer = consumer  # type: ignore[assignment]
    return loop


async def test_a_consumer_asked_to_finish_mid_batch_handles_and_commits_it_then_returns_without_polling_again() -> None:
    consumer = FakeConsumer([polled(record("ord_1", 0), record("ord_2", 1)), polled(record("ord_3", 2))])
    handler = HeldUp()
    loop = loop_on(consumer, handler)
    running = asyncio.create_task(loop.run())
    async with asyncio.timeout(10):
        await handler.started.wait()
        loop.finish()
        handler.release.set()
        await running

    assert handler.handled == ["ord_1", "ord_2"]
    assert consumer.committed == [{TopicPartition("t", 0): 2}]
    assert len(consumer.polls) == 1  # the next poll was never taken


async def test_a_consumer_asked_to_finish_while_waiting_for_a_poll_returns_at_once_committing_nothing() -> None:
    consumer = FakeConsumer([])  # nothing to read: the poll waits
    loop = loop_on(consumer, nothing)
    running = asyncio.create_task(loop.run())
    await asyncio.sleep(0.05)
    loop.finish()
    async with asyncio.timeout(2):
        await running

    assert not running.cancelled() and running.exception() is None
    assert consumer.committed == []
