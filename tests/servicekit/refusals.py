"""Topics with a small max.message.bytes of their own, as an operator sets them below the broker's, for tests of
what the producing side does when the broker refuses a record for good. They run on Apache Kafka only: Tansu refuses
idempotent producers, and the faults here live in the idempotent producer's state, as in production."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from contracts.codec import Record
from contracts.topics import Topic
from servicekit.kafka import KafkaPublisher, ensure_topics
from servicekit.postgres import create_pool, migrate
from tests.conftest import Broker

SMALL_LIMIT = 4096
"""max.message.bytes of the topics these tests make small: an operator's per-topic limit below the broker's."""


async def create_small_topic(bootstrap: str, name: str, *, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, partitions, 1, topic_configs={"max.message.bytes": str(SMALL_LIMIT)})]
        )
    finally:
        await admin.close()


async def raise_limit(bootstrap: str, name: str) -> None:
    """What the runbook says to do: fix the broker side (here: the topic takes records up to 1 MB again)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, configs={"max.message.bytes": "1048588"})]
        )
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def small_dead_letters(
    broker: Broker, database_url: str, isolation: str
) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    """A migrated pool and the test's topic prefix; the dead-letter topic small, one partition (every letter on it)."""
    prefix = f"{isolation}."
    await create_small_topic(broker.bootstrap, Topic.DEAD_LETTER.qualified(prefix))  # before ensure_topics makes it
    await ensure_topics(broker.bootstrap, [t.qualified(prefix) for t in Topic], 3)
    pool = await create_pool(database_url, isolation)
    await migrate(pool)
    yield pool, prefix
    await pool.close()


async def started_publisher(broker: Broker, prefix: str) -> KafkaPublisher:
    publisher = KafkaPublisher(broker.bootstrap, idempotence=True, client_id="refusals", topic_prefix=prefix)
    await publisher.start()
    return publisher


async def until(condition: Callable[[], Awaitable[object]], what: str, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        await asyncio.sleep(0.1)


def undecodable(key: bytes, size: int) -> Record:
    return Record(key=key, value=b"{" + b"x" * size, headers=[("event_type", b"PaymentSucceeded")])
