"""The delivery worker's settling on fakes: an error that servicekit.errors calls the database being away (a driver
that lost its protocol state in a failover, say) is waited out and the outcome written on the next attempt;
any other error stops the worker loudly, so the service stops and is restarted, never carrying on unsettled."""

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import pytest

from contracts.codec import Record
from notifier.adapters.delivery import DeliveryWorker
from notifier.adapters.queue import Claimed, PostgresDeliveryQueue, Settlement
from notifier.ports import DeliveryFailed, Target
from servicekit.kafka import KafkaPublisher
from tests.kafka_reader import eventually


def failover() -> Exception:
    """What asyncpg raises when PostgreSQL ends the session mid-operation: not a PostgresError nor an OSError."""
    return asyncpg.exceptions._base.ProtocolError("the session ended in the middle of an operation")


def delivery(notification_id: str) -> Claimed:
    return Claimed(
        notification_id=notification_id,
        order_id=f"ord_{notification_id}",
        target_key="webhook",
        target=Target("webhook"),
        attempts=1,
        payload={"notification_id": notification_id},
        raw_payload=b"{}",
        queued_at=datetime.now(UTC),
        subscribed=True,
    )


@dataclass
class FakeQueue:
    """Raises each of `claim_errors` and `settle_errors` once, in order, before it claims or settles; extends every
    lease it is asked to."""

    claim_errors: list[Exception] = field(default_factory=list)
    settle_errors: list[Exception] = field(default_factory=list)
    due: list[Claimed] = field(default_factory=list)
    settled: list[tuple[str, str]] = field(default_factory=list)
    extended: list[str] = field(default_factory=list)

    async def claim(self, limit: int, lease_s: float) -> list[Claimed]:
        if self.claim_errors:
            raise self.claim_errors.pop(0)
        claimed, self.due = self.due[:limit], self.due[limit:]
        return claimed

    async def extend(self, leases: Sequence[Claimed], lease_s: float) -> set[tuple[str, str]]:
        self.extended += [c.notification_id for c in leases]
        return {(c.notification_id, c.target_key) for c in leases}

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        if self.settle_errors:
            raise self.settle_errors.pop(0)
        self.settled += [(s.claimed.notification_id, s.state) for s in settlements]


@dataclass
class FakePublisher:
    topic_prefix: str = "t."
    published: list[Record] = field(default_factory=list)

    async def publish_many(self, entries: Sequence[tuple[str, Record]]) -> None:
        self.published += [record for _, record in entries]


@dataclass
class FakeChannel:
    """Takes every notification, or refuses each for good when `refuse`."""

    refuse: bool = False
    name: str = "webhook"
    sent: list[str] = field(default_factory=list)

    async def deliver(self, payload: dict[str, Any], target: Target) -> None:
        if self.refuse:
            raise DeliveryFailed("the receiver answered 400", retry=False)
        self.sent.append(payload["notification_id"])


@dataclass
class Running:
    worker: DeliveryWorker
    task: "asyncio.Task[None]"
    queue: FakeQueue
    channel: FakeChannel
    publisher: FakePublisher


@pytest.fixture
async def start() -> AsyncIterator[Any]:
    started: list[Running] = []

    def run(queue: FakeQueue, channel: FakeChannel | None = None) -> Running:
        channel = channel or FakeChannel()
        publisher = FakePublisher()
        worker = DeliveryWorker(
            cast(PostgresDeliveryQueue, queue),
            {"webhook": channel},
            cast(KafkaPublisher, publisher),
            poll_interval_s=0.01,
        )
        started.append(Running(worker, asyncio.create_task(worker.run()), queue, channel, publisher))
        return started[-1]

    yield run
    for running in started:
        running.task.cancel()
    await asyncio.gather(*(r.task for r in started), return_exceptions=True)


async def test_deliveries_are_settled_on_the_next_attempt_after_a_driver_protocol_error_in_settle(start: Any) -> None:
    running: Running = start(FakeQueue(settle_errors=[failover()]))
    running.worker.hand_over([delivery("n1")])
    await eventually(lambda: running.queue.settled, timeout_s=5, interval_s=0.01)
    assert running.queue.settled == [("n1", "delivered")]

    running.worker.hand_over([delivery("n2")])  # and the settling goes on
    await eventually(lambda: len(running.queue.settled) == 2, timeout_s=5, interval_s=0.01)
    assert running.queue.settled == [("n1", "delivered"), ("n2", "delivered")]
    assert running.channel.sent == ["n1", "n2"], "each delivery was sent once"
    assert not running.task.done()


async def test_a_failed_delivery_is_dead_lettered_once_and_settled_after_a_driver_protocol_error_in_settle(
    start: Any,
) -> None:
    running: Running = start(FakeQueue(settle_errors=[failover()]), FakeChannel(refuse=True))
    running.worker.hand_over([delivery("n1")])
    await eventually(lambda: running.queue.settled, timeout_s=5, interval_s=0.01)
    assert running.queue.settled == [("n1", "failed")]
    assert [r.key for r in running.publisher.published] == [b"ord_n1"]
    assert not running.task.done()


async def test_a_claim_that_meets_a_driver_protocol_error_is_retried_and_the_worker_keeps_running(start: Any) -> None:
    running: Running = start(FakeQueue(claim_errors=[failover()], due=[delivery("n1")]))
    await eventually(lambda: running.queue.settled, timeout_s=5, interval_s=0.01)
    assert running.queue.settled == [("n1", "delivered")]
    assert not running.task.done()


async def test_a_settling_error_that_is_not_a_dependency_away_stops_the_worker_loudly(
    start: Any, caplog: pytest.LogCaptureFixture
) -> None:
    running: Running = start(FakeQueue(settle_errors=[RuntimeError("a bug in settling")]))
    running.worker.hand_over([delivery("n1")])
    with (
        caplog.at_level(logging.ERROR, logger="notifier.adapters.delivery"),
        pytest.raises(RuntimeError, match="a bug in settling"),
    ):
        await asyncio.wait_for(running.task, timeout=5)
    assert any(r.exc_info and "a bug in settling" in str(r.exc_info[1]) for r in caplog.records), (
        "the worker says why it stopped"
    )
