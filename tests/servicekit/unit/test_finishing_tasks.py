"""When a service stops, an extra task registered as `Finishing` is told to finish and awaited within the stop grace,
and cut short (and named) only past it; any other extra task, one that never ends by itself, is cancelled at once."""

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from servicekit.infrastructure import Infrastructure
from servicekit.settings import ServiceSettings


@pytest.fixture
async def infra(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Infrastructure]:
    # Not connected: nothing here uses the pool, and the outbox has nothing left to publish.
    settings = ServiceSettings(topic_prefix="t1.", stop_grace_s=1.0)  # type: ignore[call-arg]
    built = await Infrastructure.open("ledger", settings, None, connect=False)

    async def nothing_left() -> int:
        return 0

    monkeypatch.setattr(built.relay, "publish_batch", nothing_left)
    yield built
    await built.close()


async def test_a_finishing_task_is_awaited_until_it_ends_and_a_plain_task_is_cancelled(infra: Infrastructure) -> None:
    told, ended = asyncio.Event(), []

    async def finishes_when_told() -> None:
        await told.wait()
        await asyncio.sleep(0.2)  # its work in hand
        ended.append("finishing")

    finishing = asyncio.create_task(finishes_when_told())
    plain = asyncio.create_task(asyncio.Event().wait())
    stopping = asyncio.Event()
    stopping.set()
    await asyncio.wait_for(infra._finish_when(stopping, [], [plain], {finishing: told.set}), timeout=5)
    assert ended == ["finishing"]
    assert finishing.done() and not finishing.cancelled()
    assert plain.cancelled()


async def test_a_finishing_task_still_running_when_the_grace_ends_is_cut_short_and_named(
    infra: Infrastructure, caplog: pytest.LogCaptureFixture
) -> None:
    async def never_finishes() -> None:
        await asyncio.Event().wait()

    stuck = asyncio.create_task(never_finishes(), name="stuck-worker")
    plain = asyncio.create_task(asyncio.Event().wait())
    stopping = asyncio.Event()
    stopping.set()
    with caplog.at_level(logging.WARNING, logger="servicekit.infrastructure"):
        await asyncio.wait_for(infra._finish_when(stopping, [], [plain], {stuck: lambda: None}), timeout=5)
    assert stuck.cancelled() and plain.cancelled()
    assert any("stuck-worker" in r.getMessage() and "cutting them short" in r.getMessage() for r in caplog.records)
