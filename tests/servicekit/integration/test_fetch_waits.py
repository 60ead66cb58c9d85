"""A consumer's fetches wait the idle wait while it has no records and the short wait once records flow
(servicekit.fetching), on the session's real broker with the pinned aiokafka: what each fetch request sent
carries is recorded, so this fails if aiokafka stops reading the wait where servicekit.fetching sets it."""

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from contracts.codec import encode, envelope_for
from contracts.topics import Topic
from servicekit.consumer import KafkaConsumerLoop
from servicekit.fetching import IDLE_AFTER_S
from servicekit.kafka import DeadLetterPublisher, Delivery, KafkaPublisher, ensure_topics
from servicekit.settings import KafkaTuning
from tests.conftest import Broker
from tests.servicekit.events import paid

TIMEOUT_S = 120  # deadlines, not sleeps: the broker and the test share two loaded cores
BUSY_MS, IDLE_MS = 50, 400


class Sent:
    """The wait of every fetch request the consumer sends, with when it was sent."""

    def __init__(self, consumer: KafkaConsumerLoop) -> None:
        self.waits: list[tuple[float, int]] = []
        fetcher = consumer._consumer._fetcher
        send = fetcher._proc_fetch_request  # servicekit.fetching's, bound

        async def spy(assignment: Any, node_id: int, request: Any) -> bool:
            self.waits.append((time.monotonic(), request._max_wait_ms))
            brought: bool = await send(assignment, node_id, request)
            return brought

        fetcher._proc_fetch_request = spy

    def since(self, moment: float) -> list[int]:
        return [wait for at, wait in self.waits if at >= moment]


async def until(condition: object, what: str) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.05)


@asynccontextmanager
async def consuming(
    broker: Broker, isolation: str, tuning: KafkaTuning, handled: list[str]
) -> AsyncIterator[tuple[KafkaPublisher, str, Sent]]:
    """A consumer of a new topic running with `tuning`, recording the order ids it handles; the publisher, the
    topic and what its fetches waited."""
    prefix = f"{isolation}."
    topic = Topic.PAYMENTS_EVENTS.qualified(prefix)
    await ensure_topics(broker.bootstrap, [topic], 2)
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test", topic_prefix=prefix)
    await publisher.start()

    async def handler(deliveries: Sequence[Delivery]) -> None:
        handled.extend(message.order_id for message, _ in deliveries)

    consumer = KafkaConsumerLoop(
        bootstrap=broker.bootstrap,
        group_id=f"{isolation}-g",
        topics=[topic],
        handler=handler,
        dead_letters=DeadLetterPublisher(publisher),
        tuning=tuning,
    )
    await consumer.start()
    sent = Sent(consumer)
    running = asyncio.create_task(consumer.run())
    try:
        yield publisher, topic, sent
        assert not running.done(), running
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await consumer.stop()
        await publisher.stop()


async def test_an_idle_consumer_fetches_with_the_idle_wait_and_with_the_short_one_once_records_come(
    broker: Broker, isolation: str
) -> None:
    handled: list[str] = []
    tuning = KafkaTuning(fetch_max_wait_ms=BUSY_MS, fetch_idle_wait_ms=IDLE_MS)
    async with consuming(broker, isolation, tuning, handled) as (publisher, topic, sent):
        idle_from = time.monotonic() + IDLE_AFTER_S  # nothing on the topic since the consumer started
        await until(lambda: len(sent.since(idle_from)) >= 3, "three fetches once idle")
        assert set(sent.since(idle_from)) == {IDLE_MS}, sent.waits

        message = paid("ord_1")
        published = time.monotonic()
        await publisher.publish(topic, encode(message, envelope_for(message, producer="payments")))
        await until(lambda: handled == ["ord_1"], "the record handled")
        await until(lambda: sent.since(published), "a fetch after the record")
        # the fetch sent after the one that brought the record waits the short wait
        assert sent.since(published)[0] == BUSY_MS, sent.waits

        quiet_from = time.monotonic() + IDLE_AFTER_S
        await until(lambda: sent.since(quiet_from), "a fetch once idle again")
        assert set(sent.since(quiet_from)) == {IDLE_MS}, sent.waits


async def test_a_consumer_without_an_idle_wait_keeps_the_short_wait(broker: Broker, isolation: str) -> None:
    """Tansu answers a fetch only at its deadline, so there the settings give no idle wait: nothing changes."""
    async with consuming(broker, isolation, KafkaTuning(fetch_max_wait_ms=BUSY_MS), []) as (_, _, sent):
        idle_from = time.monotonic() + IDLE_AFTER_S
        await until(lambda: len(sent.since(idle_from)) >= 3, "three fetches once idle")
        assert set(sent.since(idle_from)) == {BUSY_MS}, sent.waits
