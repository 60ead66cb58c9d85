"""Fixtures for the notifier's tests: the loopback push service and a notifier factory."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import Broker
from tests.notifier.harness import VAPID_PUBLIC_KEY, RunningNotifier, notifier_settings, start_notifier
from tests.notifier.push_service import PushService

StartNotifier = Callable[..., Awaitable[RunningNotifier]]


@pytest.fixture
async def push_service() -> AsyncIterator[PushService]:
    service = PushService(vapid_public_key=VAPID_PUBLIC_KEY)
    await service.start()
    yield service
    await service.stop()
    assert service.errors == [], "the push service refused messages: " + "; ".join(service.errors)


@pytest.fixture
async def notifier(broker: Broker, database_url: str, isolation: str) -> AsyncIterator[StartNotifier]:
    """Starts a notifier for this test's topics and schema (with settings overrides); stops what is left."""
    started: list[RunningNotifier] = []

    async def start(**overrides: Any) -> RunningNotifier:
        running = await start_notifier(notifier_settings(broker, database_url, isolation, **overrides))
        started.append(running)
        return running

    yield start
    for running in started:
        if not running.notifier.infra.pool.is_closing():
            await running.stop()
