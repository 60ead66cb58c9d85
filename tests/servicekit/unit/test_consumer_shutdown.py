"""A consumer asked to stop while its database transaction cannot finish stops; it never mistakes the
shutdown for a transient failure to retry."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import cast

from servicekit.consumer import KafkaConsumerLoop
from servicekit.kafka import DeadLetterPublisher
from tests.servicekit.consumer_fakes import polled, record


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
