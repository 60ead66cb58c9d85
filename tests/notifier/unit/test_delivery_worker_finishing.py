"""The delivery worker's graceful finish on fakes: told to finish (the service stops), it claims nothing more, lets
the deliveries it started end and writes their outcomes, then `run` returns; cut short past the stop grace, it names
each delivery it leaves to its lease. And the lease of a delivery it holds is extended while its outcome waits."""

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from notifier.adapters.delivery import DeliveryWorker
from notifier.adapters.queue import PostgresDeliveryQueue
from notifier.ports import Target
from servicekit.kafka import KafkaPublisher
from tests.kafka_reader import eventually
from tests.notifier.unit.test_delivery_worker_settling import FakePublisher, FakeQueue, delivery, failover


@dataclass
class SlowChannel:
    """Takes every notification once `answer` is set: a receiver that takes its time."""

    name: str = "webhook"
    answer: asyncio.Event = field(default_factory=asyncio.Event)
    started: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)

    async def deliver(self, payload: dict[str, Any], target: Target) -> None:
        self.started.append(payload["notification_id"])
        await self.answer.wait()
        self.sent.append(payload["notification_id"])


def worker_on(queue: FakeQueue, channel: SlowChannel) -> DeliveryWorker:
    return DeliveryWorker(
        cast(PostgresDeliveryQueue, queue),
        {"webhook": channel},
        cast(KafkaPublisher, FakePublisher()),
        poll_interval_s=0.01,
    )


async def test_a_finishing_worker_lets_the_delivery_in_flight_end_writes_its_outcome_and_claims_nothing_more() -> None:
    queue, channel = FakeQueue(), SlowChannel()
    worker = worker_on(queue, channel)
    running = asyncio.create_task(worker.run())
    try:
        worker.hand_over([delivery("n1")])
        await eventually(lambda: channel.started == ["n1"], timeout_s=5, interval_s=0.01)
        worker.finish()
        queue.due.append(delivery("n2"))  # due now, but the service is stopping: the next instance claims it
        await asyncio.sleep(0.05)
        assert not running.done(), "the worker waits for the delivery in flight"
        channel.answer.set()
        await asyncio.wait_for(running, timeout=5)
    finally:
        running.cancel()
    assert queue.settled == [("n1", "delivered")]
    assert channel.sent == ["n1"]
    assert [d.notification_id for d in queue.due] == ["n2"], "nothing was claimed after finish"


async def test_a_finishing_worker_cut_short_names_the_delivery_in_flight_and_the_outcome_not_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue, channel = FakeQueue(settle_errors=[failover()] * 1000), SlowChannel()
    worker = worker_on(queue, channel)
    running = asyncio.create_task(worker.run())
    worker.hand_over([delivery("n1")])
    await eventually(lambda: channel.started == ["n1"], timeout_s=5, interval_s=0.01)
    channel.answer.set()  # n1 is delivered, but the database does not take its outcome
    await eventually(lambda: channel.sent == ["n1"], timeout_s=5, interval_s=0.01)
    channel.answer.clear()
    worker.hand_over([delivery("n2")])  # and n2 is still on its way when the grace runs out
    await eventually(lambda: channel.started == ["n1", "n2"], timeout_s=5, interval_s=0.01)
    worker.finish()
    await asyncio.sleep(0.05)
    assert not running.done()
    with caplog.at_level(logging.WARNING, logger="notifier.adapters.delivery"):
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    cut = [r.getMessage() for r in caplog.records if "cut short" in r.getMessage()]
    assert any("notification n1" in line and "outcome was not written" in line for line in cut), cut
    assert any("notification n2" in line and "still in flight" in line for line in cut), cut


async def test_the_lease_of_a_delivery_whose_outcome_waits_is_extended_until_the_outcome_is_written() -> None:
    queue, channel = FakeQueue(settle_errors=[failover()] * 1000), SlowChannel()
    channel.answer.set()
    worker = DeliveryWorker(
        cast(PostgresDeliveryQueue, queue),
        {"webhook": channel},
        cast(KafkaPublisher, FakePublisher()),
        lease_s=0.2,
        poll_interval_s=0.01,
    )
    running = asyncio.create_task(worker.run())
    try:
        worker.hand_over([delivery("n1")])
        await eventually(lambda: queue.extended.count("n1") >= 3, timeout_s=5, interval_s=0.01)
        queue.settle_errors.clear()  # the database takes outcomes again
        await eventually(lambda: queue.settled == [("n1", "delivered")], timeout_s=5, interval_s=0.01)
        extended = len(queue.extended)
        await asyncio.sleep(0.3)
        assert len(queue.extended) == extended, "a settled delivery's lease is left alone"
    finally:
        running.cancel()
    assert channel.sent == ["n1"]
