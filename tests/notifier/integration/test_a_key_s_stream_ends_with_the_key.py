"""A live stream opened with an orders:read key lasts no longer than the key: a link's stream ends when the link
expires, and a key's expiry is exact (servicekit.identity.authenticator), so a key's stream ends when it expires."""

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx

from servicekit.identity import Scope
from tests.conftest import Broker
from tests.notifier.harness import notifier_settings, start_notifier


async def test_a_live_stream_opened_with_a_key_ends_when_the_key_expires(
    broker: Broker, database_url: str, isolation: str
) -> None:
    running = await start_notifier(notifier_settings(broker, database_url, isolation, sse_heartbeat_s=0.5))
    try:
        keys = running.notifier.infra.keys
        _, key = await keys.create(
            "short-lived", {Scope.ORDERS_READ}, expires_at=datetime.now(UTC) + timedelta(seconds=2)
        )
        url = f"{running.url}/v1/orders/ord_key_stream/events"
        opened = time.monotonic()
        async with (
            httpx.AsyncClient(timeout=30) as browser,
            browser.stream("GET", url, headers={"Authorization": f"Bearer {key}"}) as answer,
        ):
            assert answer.status_code == 200
            try:
                async with asyncio.timeout(12):
                    async for _ in answer.aiter_text():
                        pass
            except TimeoutError:
                raise AssertionError(
                    f"the stream still runs {time.monotonic() - opened:.0f} s after it opened, its key"
                    " expired 2 s after it opened"
                ) from None
    finally:
        await running.stop()
