"""The notifier's real delivery worker and metrics, delivering through channels that answer the way a
scenario says. Only its queue (PostgreSQL) and its dead-letter publisher (Kafka) are stand-ins here: the
worker decides every outcome label itself."""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from contracts.codec import Record
from contracts.events import OrderStatus
from notifier.adapters.delivery import DeliveryWorker, RetryPolicy
from notifier.adapters.metrics import PrometheusNotifierMetrics
from notifier.adapters.queue import Claimed, Settlement
from notifier.ports import DeliveryFailed, Target

CHANNELS = ("webhook", "webpush")
FINAL = ("delivered", "failed", "gone")

Answer = Callable[[str, int], DeliveryFailed | None]
"""How a channel answers the `attempts`-th delivery of an order: None when it takes it."""


def accepts(order_id: str, attempts: int) -> DeliveryFailed | None:
    return None


class Channel:
    def __init__(self, name: str, answer: Answer) -> None:
        self.name = name
        self.answer = answer

    async def deliver(self, payload: dict[str, Any], target: Target) -> None:
        failure = self.answer(payload["order_id"], payload["attempts"])
        if failure is not None:
            raise failure


class Queue:
    """The claim and settle of the delivery queue; a delivery to retry is offered again once its backoff has
    passed: at once without one, else at the first step of the scenario at or after its due time."""

    def __init__(self) -> None:
        self.waiting: list[Claimed] = []
        self.later: list[tuple[datetime, Claimed]] = []
        self.now = datetime.now(UTC)
        self.finished = 0
        self.changed = asyncio.Event()

    def due(self, now: datetime) -> None:
        """Time passes to `now`: the retries due by then are offered again."""
        self.now = now
        due = [claimed for at, claimed in self.later if at <= now]
        self.later = [(at, claimed) for at, claimed in self.later if at > now]
        self.waiting += due

    async def claim(self, limit: int, lease_s: float) -> list[Claimed]:
        claimed, self.waiting = self.waiting[:limit], self.waiting[limit:]
        return claimed

    async def settle(self, batch: list[Settlement]) -> None:
        for settled in batch:
            if settled.state == "pending":
                again = settled.claimed
                attempts = again.attempts + 1
                payload = {**again.payload, "attempts": attempts}
                retry = Claimed(
                    again.notification_id,
                    again.order_id,
                    again.target_key,
                    again.target,
                    attempts,
                    payload,
                    again.raw_payload,
                    again.queued_at,
                    again.subscribed,
                )
                if settled.delay_s > 0:
                    self.later.append((self.now + timedelta(seconds=settled.delay_s), retry))
                else:
                    self.waiting.append(retry)
            else:
                self.finished += 1
        self.changed.set()


class DeadLetters:
    topic_prefix = ""

    def __init__(self) -> None:
        self.records: list[tuple[str, Record]] = []

    async def publish_many(self, records: list[tuple[str, Record]]) -> None:
        self.records += records


TESTS_RETRY_POLICY = RetryPolicy(max_attempts=3, base_backoff_s=0, max_backoff_s=0)
"""Three attempts at once, each delivery ended within its step; RetryPolicy() is the service's default (for days)."""


class Notifier:
    """Deliveries of every status change to each channel, through the real DeliveryWorker."""

    def __init__(self, answers: dict[str, Answer] | None = None, policy: RetryPolicy = TESTS_RETRY_POLICY) -> None:
        self.answers = {name: (answers or {}).get(name, accepts) for name in CHANNELS}
        self.policy = policy
        self.queue = Queue()
        self.dead_letters = DeadLetters()
        self._queued = 0
        self._worker: DeliveryWorker | None = None
        self._task: asyncio.Task[None] | None = None

    def attach(self, registry: CollectorRegistry) -> None:
        channels = {name: Channel(name, answer) for name, answer in self.answers.items()}
        self._worker = DeliveryWorker(
            self.queue,  # type: ignore[arg-type]
            channels,
            self.dead_letters,  # type: ignore[arg-type]
            policy=self.policy,
            metrics=PrometheusNotifierMetrics(registry, channels=channels),
            poll_interval_s=0.05,
        )

    async def notify(self, changes: list[tuple[str, OrderStatus]], now: datetime) -> None:
        """At `now`, queue each (order, status) change for every channel beside the retries due, and wait until
        each delivery has ended or waits for its next attempt."""
        assert self._worker is not None
        self.queue.due(now)
        if not changes and not self.queue.waiting:
            return
        if self._task is None:
            self._task = asyncio.create_task(self._worker.run())
        for order_id, status in changes:
            for channel in CHANNELS:
                self._queued += 1
                payload = {"order_id": order_id, "status": status.value, "attempts": 1}
                target = Target(channel)
                self.queue.waiting.append(
                    Claimed(f"n{self._queued}", order_id, channel, target, 1, payload, b"{}", datetime.now(UTC), True)
                )
        self._worker.wake()
        async with asyncio.timeout(60):
            while self.queue.finished + len(self.queue.later) < self._queued:
                self.queue.changed.clear()
                await self.queue.changed.wait()

    async def stop(self) -> None:
        # Cancelled again until it ends: on Python 3.11 the worker's asyncio.wait_for can swallow a
        # cancellation that arrives just as its wait ends.
        while self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=0.5)
