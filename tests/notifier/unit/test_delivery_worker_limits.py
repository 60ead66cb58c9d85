"""Each channel's own limit of deliveries in flight, on fakes: a channel at its limit (a webhook that hangs) holds
back no other channel's deliveries, its own wait in memory (handed over) or in the queue (never claimed, so no
attempt is counted unmade), and no claim takes more of a channel than it has room for."""

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from typing import cast

import pytest

from notifier.adapters.delivery import DeliveryWorker, InFlightLimit
from notifier.adapters.queue import Claimed, PostgresDeliveryQueue
from notifier.ports import Target
from servicekit.kafka import KafkaPublisher
from tests.kafka_reader import eventually
from tests.notifier.unit.test_delivery_worker_finishing import SlowChannel
from tests.notifier.unit.test_delivery_worker_settling import FakeChannel, FakePublisher, FakeQueue, delivery


def to(channel: str, notification_id: str) -> Claimed:
    return dataclasses.replace(
        delivery(notification_id), target_key=f"{channel}:{notification_id}", target=Target(channel)
    )


@dataclass
class ChannelQueue(FakeQueue):
    """Claims only the channels it is told to take (every one when none are named), and records each claim's limit
    and the channels it took (None for every one)."""

    claims: list[tuple[int, frozenset[str] | None]] = field(default_factory=list)

    async def claim(self, limit: int, lease_s: float, channels: Collection[str] | None = None) -> list[Claimed]:
        self.claims.append((limit, None if channels is None else frozenset(channels)))
        taken = [d for d in self.due if channels is None or d.target.channel in channels][:limit]
        self.due = [d for d in self.due if d not in taken]
        return taken


@dataclass
class Workers:
    started: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, queue: FakeQueue, hook: SlowChannel, push: FakeChannel, *, lease_s: float = 30.0) -> DeliveryWorker:
        worker = DeliveryWorker(
            cast(PostgresDeliveryQueue, queue),
            {"webhook": hook, "webpush": push},
            cast(KafkaPublisher, FakePublisher()),
            lease_s=lease_s,
            limits=[InFlightLimit(frozenset({"webhook"}), 2), InFlightLimit(frozenset({"webpush"}), 100)],
            poll_interval_s=0.01,
        )
        self.started.append(asyncio.create_task(worker.run()))
        return worker


@pytest.fixture
async def workers() -> AsyncIterator[Workers]:
    running = Workers()
    yield running
    for task in running.started:
        task.cancel()
    await asyncio.gather(*running.started, return_exceptions=True)


async def test_deliveries_handed_over_to_a_channel_at_its_limit_hold_back_none_of_another_channels(
    workers: Workers,
) -> None:
    hook, push = SlowChannel(), FakeChannel(name="webpush")
    worker = workers.start(ChannelQueue(), hook, push)
    worker.hand_over([to("webhook", f"h{i}") for i in range(5)] + [to("webpush", f"p{i}") for i in range(5)])
    await eventually(lambda: len(push.sent) == 5, timeout_s=5, interval_s=0.01)
    assert hook.started == ["h0", "h1"], "the webhook has two slots: the others wait for one"
    hook.answer.set()
    await eventually(lambda: len(hook.sent) == 5, timeout_s=5, interval_s=0.01)
    assert hook.sent == [f"h{i}" for i in range(5)], "in the order they were handed over"


async def test_a_claim_leaves_a_full_channels_deliveries_in_the_queue_and_takes_no_more_than_a_channel_has_room_for(
    workers: Workers,
) -> None:
    queue, hook, push = ChannelQueue(), SlowChannel(), FakeChannel(name="webpush")
    worker = workers.start(queue, hook, push)
    worker.hand_over([to("webhook", "h0")])
    await eventually(lambda: hook.started == ["h0"], timeout_s=5, interval_s=0.01)
    queue.claims.clear()
    queue.due += [to("webhook", "h1"), to("webhook", "h2")] + [to("webpush", f"p{i}") for i in range(3)]
    worker.wake()
    await eventually(lambda: len(push.sent) == 3, timeout_s=5, interval_s=0.01)
    assert hook.started == ["h0", "h1"], "one slot was left for the webhook: one of its deliveries was claimed"
    assert [d.notification_id for d in queue.due] == ["h2"], "the webhook's second is left in the queue, unclaimed"
    assert all(limit <= 1 for limit, taken in queue.claims if taken is None or "webhook" in taken), queue.claims
    assert any(taken == {"webpush"} for _, taken in queue.claims), queue.claims
    hook.answer.set()
    await eventually(lambda: hook.sent == ["h0", "h1", "h2"], timeout_s=5, interval_s=0.01)


async def test_a_delivery_handed_over_that_waits_past_half_its_lease_for_its_channel_is_left_to_its_lease(
    workers: Workers, caplog: pytest.LogCaptureFixture
) -> None:
    hook, push = SlowChannel(), FakeChannel(name="webpush")
    worker = workers.start(ChannelQueue(), hook, push, lease_s=0.2)
    worker.hand_over([to("webhook", f"h{i}") for i in range(3)])
    await eventually(lambda: hook.started == ["h0", "h1"], timeout_s=5, interval_s=0.01)
    with caplog.at_level(logging.WARNING, logger="notifier.adapters.delivery"):
        await asyncio.sleep(0.15)
        hook.answer.set()
        await eventually(lambda: hook.sent == ["h0", "h1"], timeout_s=5, interval_s=0.01)
        await asyncio.sleep(0.05)
    assert hook.started == ["h0", "h1"], "h2 waited past half its lease: the next claim when it ends sends it"
    assert any("notification h2" in r.getMessage() and "waited too long" in r.getMessage() for r in caplog.records)
