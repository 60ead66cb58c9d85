"""A partition revoked while its poll is being handled (a second member joined the group meanwhile) is not
committed by the member that lost it, and that is not an error: the member keeps consuming, the new owner
handles the records again from the last commit, nothing is dead-lettered. Real broker of the session's kind."""

import asyncio
from collections import Counter
from collections.abc import Sequence

import pytest

from contracts.codec import encode, envelope_for
from contracts.topics import Topic
from servicekit.consumer import KafkaConsumerLoop
from servicekit.kafka import DeadLetterPublisher, Delivery, KafkaPublisher, ensure_topics
from tests.conftest import Broker
from tests.servicekit.events import paid

TIMEOUT_S = 120  # deadlines, not sleeps: the broker and the test share two loaded cores


class Handler:
    """Counts every order it handles; the first call, when `hold` is set, waits until the test releases it."""

    def __init__(self, hold: bool) -> None:
        self.handled: Counter[str] = Counter()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        if not hold:
            self.release.set()

    async def __call__(self, deliveries: Sequence[Delivery]) -> None:
        self.entered.set()
        await self.release.wait()
        self.handled.update(message.order_id for message, _ in deliveries)


async def until(condition: object, what: str) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.1)


async def test_a_partition_revoked_mid_poll_is_left_to_its_new_owner_and_the_first_member_keeps_consuming(
    broker: Broker, isolation: str, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"{isolation}."
    topic = Topic.PAYMENTS_EVENTS.qualified(prefix)
    await ensure_topics(broker.bootstrap, [t.qualified(prefix) for t in Topic], 2)
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test", topic_prefix=prefix)
    await publisher.start()

    def loop(handler: Handler) -> KafkaConsumerLoop:
        return KafkaConsumerLoop(
            bootstrap=broker.bootstrap,
            group_id=f"{isolation}-g",
            topics=[topic],
            handler=handler,
            dead_letters=DeadLetterPublisher(publisher),
        )

    first_handler, second_handler = Handler(hold=True), Handler(hold=False)
    first, second = loop(first_handler), loop(second_handler)
    tasks: list[asyncio.Task[None]] = []
    try:
        orders = [f"ord_{i}" for i in range(40)]  # keyed by order id: both partitions get some
        for order_id in orders:
            message = paid(order_id)
            await publisher.publish(topic, encode(message, envelope_for(message, producer="payments")))
        await first.start()
        tasks.append(asyncio.create_task(first.run()))
        async with asyncio.timeout(TIMEOUT_S):
            await first_handler.entered.wait()  # the first member holds a poll of both partitions

        await second.start()  # joins: the group rebalances while the first member's poll is in hand
        tasks.append(asyncio.create_task(second.run()))
        await until(lambda: second_handler.handled, "the second member handles records of its own")
        first_handler.release.set()  # the first member finishes a poll whose partitions moved in part

        later = [f"late_{i}" for i in range(40)]
        for order_id in later:
            message = paid(order_id)
            await publisher.publish(topic, encode(message, envelope_for(message, producer="payments")))
        both = lambda: set(first_handler.handled) | set(second_handler.handled) >= set(orders + later)  # noqa: E731
        await until(both, "every record handled by one member or the other")

        # The case happened: the first member's commit met a partition it no longer held.
        revoked = [r.message for r in caplog.records if r.name == "servicekit.consumer"]
        assert any("revoked during the poll" in m or "failed after a rebalance" in m for m in revoked), revoked
        # and the new owner handled those records again, from the last commit
        assert first_handler.handled.keys() & second_handler.handled.keys() & set(orders)
        assert not any(task.done() for task in tasks), [t.exception() for t in tasks if t.done()]
        assert first_handler.handled.keys() & set(later), "the first member stopped consuming after the revoke"
        assert second_handler.handled.keys() & set(later)
        assert first.dead_lettered_total == 0 and second.dead_lettered_total == 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for consumer in (first, second):
            await consumer.stop()
        await publisher.stop()
