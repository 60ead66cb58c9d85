"""A live stream opened with an orders:read key lasts no longer than the key: a link's stream ends when the link
expires, and a key's expiry is exact (servicekit.identity.authenticator), so a key's stream ends when it expires."""

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx

from contracts.events import OrderStatus
from servicekit.identity import Scope
from tests.conftest import Broker
from tests.notifier.harness import change, notifier_settings, publish, start_notifier


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


async def test_a_key_s_stream_sends_no_change_of_the_order_that_comes_after_the_key_expired(
    broker: Broker, database_url: str, isolation: str
) -> None:
    order_id = "ord_key_stream_after"
    running = await start_notifier(notifier_settings(broker, database_url, isolation, sse_heartbeat_s=30.0))
    try:
        await publish(broker, f"{isolation}.", change(order_id, OrderStatus.DELAYED, 1))
        await running.wait_until_consumed(order_id, 1)
        expires_at = datetime.now(UTC) + timedelta(seconds=2)
        _, key = await running.notifier.infra.keys.create("short-lived", {Scope.ORDERS_READ}, expires_at=expires_at)
        url = f"{running.url}/v1/orders/{order_id}/events"
        seen = ""
        async with (
            httpx.AsyncClient(timeout=60) as browser,
            browser.stream("GET", url, headers={"Authorization": f"Bearer {key}"}) as answer,
        ):
            assert answer.status_code == 200
            chunks = answer.aiter_text()
            while '"sequence":1' not in seen:
                seen += await anext(chunks)
            await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.5)
            await publish(broker, f"{isolation}.", change(order_id, OrderStatus.CREDITED, 2))
            await running.wait_until_consumed(order_id, 2)
            try:
                async with asyncio.timeout(5):  # the change reaches a stream within a second; past the key, never
                    async for chunk in chunks:
                        seen += chunk
            except TimeoutError:
                pass
        assert '"sequence":2' not in seen, f"the order's change after its key expired was sent: {seen}"
    finally:
        await running.stop()
