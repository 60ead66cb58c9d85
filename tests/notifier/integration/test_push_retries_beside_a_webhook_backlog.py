"""A webhook back from a long outage that answers every delivery at once with an error (503) is never at its limit of
deliveries in flight, so no claim leaves it in the queue: users' pushes due for a retry must still go out at once,
not after every webhook delivery that became due before them. The worker with the real PostgreSQL queue; the webhook
and the push service are stand-ins that answer at once."""

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import pytest

from notifier.adapters.delivery import DeliveryWorker, InFlightLimit
from notifier.adapters.queue import PostgresDeliveryQueue
from notifier.ports import DeliveryFailed, Target
from servicekit.kafka import KafkaPublisher
from tests.kafka_reader import eventually
from tests.notifier.integration.webhook_backlog import pool, queue_backlog  # noqa: F401 - the fixture
from tests.notifier.unit.test_delivery_worker_settling import FakePublisher

WEBHOOK_BACKLOG = 20_000
PUSHES = 5
WEBHOOK_CONNECTIONS = 50  # NotifierSettings' defaults
PUSH_CONNECTIONS = 256
AHEAD_AT_MOST = 4 * WEBHOOK_CONNECTIONS  # a few claims' worth of webhook attempts before the pushes, not the backlog


@dataclass
class FailingWebhook:
    """Answers every delivery at once with a 503."""

    name: str = "webhook"
    attempts: int = 0

    async def deliver(self, payload: dict[str, Any], target: Target) -> None:
        self.attempts += 1
        raise DeliveryFailed("webhook answered 503", retry=True)


@dataclass
class PushService:
    """Takes every push at once, noting how many webhook attempts were made before it and when it came."""

    webhook: FailingWebhook
    name: str = "webpush"
    pushed: list[tuple[str | None, int, float]] = field(default_factory=list)

    async def deliver(self, payload: dict[str, Any], target: Target) -> None:
        self.pushed.append((target.subscription_id, self.webhook.attempts, time.monotonic()))


@pytest.fixture
async def running() -> AsyncIterator[list["asyncio.Task[None]"]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_pushes_due_for_a_retry_go_out_ahead_of_a_failing_webhook_s_backlog(
    pool: asyncpg.Pool,  # noqa: F811
    running: list["asyncio.Task[None]"],
) -> None:
    await queue_backlog(pool, webhook=WEBHOOK_BACKLOG, pushes=PUSHES)
    webhook = FailingWebhook()
    push = PushService(webhook)
    worker = DeliveryWorker(
        PostgresDeliveryQueue(pool),
        {"webhook": webhook, "webpush": push},
        cast(KafkaPublisher, FakePublisher()),
        limits=[
            InFlightLimit(frozenset({"webhook"}), WEBHOOK_CONNECTIONS),
            InFlightLimit(frozenset({"webpush"}), PUSH_CONNECTIONS),
        ],
    )
    started = time.monotonic()
    running.append(asyncio.create_task(worker.run()))
    await eventually(lambda: len(push.pushed) == PUSHES, timeout_s=120, interval_s=0.05)
    ahead = max(attempts for _, attempts, _ in push.pushed)
    took = max(at for _, _, at in push.pushed) - started
    assert ahead <= AHEAD_AT_MOST, (
        f"{PUSHES} users' pushes due for a retry went out only after {ahead} attempts of the webhook's backlog of"
        f" {WEBHOOK_BACKLOG} ({took:.1f} s after the worker started): each claim took the oldest due deliveries,"
        f" {WEBHOOK_CONNECTIONS} at a time (the least room among the channels), all of them the webhook's"
    )
