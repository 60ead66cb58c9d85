"""The notifier's two consumers (status changes and expiries) retry a poll that failed set-based one message at a
time, in one transaction. Two such polls sharing orders in opposite order, at the same moment, wait for each other:
each takes all its orders' locks up front, in one fixed order, before its first message. PostgreSQL never has to
break a deadlock between them (and the poll retried as if the database were away)."""

import asyncio
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from contracts.base import Message
from contracts.codec import Envelope, encode, envelope_for
from contracts.topics import Topic
from notifier.bootstrap import Notifier, build
from servicekit.consumer import KafkaConsumerLoop
from tests.conftest import Broker
from tests.notifier.harness import notifier_settings
from tests.notifier.integration.late_credit import credited, expired

FIRST, SECOND = "ord_retried_a", "ord_retried_b"


def poll(topic: str, messages: Sequence[Message]) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    records = []
    for offset, message in enumerate(messages):
        encoded = encode(message, envelope_for(message, producer="test"))
        key, value = encoded.key, encoded.value
        records.append(ConsumerRecord(topic, 0, offset, 0, 0, key, value, None, len(key), len(value), encoded.headers))
    return {TopicPartition(topic, 0): records}


@pytest.fixture
async def notifier(broker: Broker, database_url: str, isolation: str) -> AsyncIterator[Notifier]:
    built = await build(notifier_settings(broker, database_url, isolation))
    try:
        yield built
    finally:
        await built.close()


class Meeting:
    """Makes the service's handler of each consumer fail a whole poll (so the consumer retries it one message at a
    time) and, once each has handled its first message alone, lets neither go on before the other got there too,
    for as long as the other can get there: without the up-front locks, each then holds its first order's lock and
    asks for the other's. Keeps each deadlock the service's handler raised."""

    def __init__(self, loops: Sequence[KafkaConsumerLoop]) -> None:
        self.arrived = {loop.group_id: asyncio.Event() for loop in loops}
        self.deadlocks: list[BaseException] = []
        for loop in loops:
            # The service's own handler, wrapped; the loop keeps everything else the service gave it.
            loop._handler = self._wrapping(loop.group_id, loop._handler)

    def _wrapping(self, group: str, handler: object) -> object:
        async def handle(deliveries: Sequence[tuple[Message, Envelope]]) -> None:
            if len(deliveries) > 1:
                raise RuntimeError("the poll fails set-based")
            try:
                await handler(deliveries)  # type: ignore[operator]
            except asyncpg.DeadlockDetectedError as exc:
                self.deadlocks.append(exc)
                raise
            if not self.arrived[group].is_set():
                self.arrived[group].set()
                others = [event.wait() for name, event in self.arrived.items() if name != group]
                # The other poll, waiting for this one's locks, never gets here: go on without it.
                await asyncio.wait([asyncio.ensure_future(w) for w in others], timeout=1.5)

        return handle


async def test_a_status_poll_and_an_expiry_poll_retried_one_message_at_a_time_on_the_same_orders_never_deadlock(
    notifier: Notifier,
) -> None:
    statuses, expiries = notifier.infra.consumers
    prefix = notifier.infra.settings.topic_prefix
    meeting = Meeting([statuses, expiries])

    async with asyncio.timeout(30):
        await asyncio.gather(
            statuses.handle_poll(
                poll(
                    Topic.ORDERS_STATUS.qualified(prefix),
                    [credited(FIRST, f"u-{FIRST}"), credited(SECOND, f"u-{SECOND}")],
                )
            ),
            expiries.handle_poll(
                poll(
                    Topic.PAYMENTS_EVENTS.qualified(prefix),
                    [expired(SECOND, f"u-{SECOND}"), expired(FIRST, f"u-{FIRST}")],
                )
            ),
        )

    assert meeting.deadlocks == []
    assert statuses.dead_lettered_total == expiries.dead_lettered_total == 0
    async with notifier.infra.pool.acquire() as conn:
        queued = await conn.fetch(
            "SELECT order_id, status FROM notifications WHERE order_id = ANY($1::text[]) ORDER BY 1, 2",
            [FIRST, SECOND],
        )
    assert [(r["order_id"], r["status"]) for r in queued] == [
        (FIRST, "credited"),
        (FIRST, "expired"),
        (SECOND, "credited"),
        (SECOND, "expired"),
    ]
