"""Open live streams are bounded (issue 15 item 7): per order (NOTIFIER_MAX_STREAMS_PER_ORDER) and per process
(NOTIFIER_MAX_STREAMS). Past a bound the notifier answers 429 with Retry-After and an error body naming the
limit (unless the order's streams are the same viewer's: test_a_vanished_phone_s_stream_gives_way); a stream that
ends gives its slot back."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from servicekit.identity import Scope
from servicekit.links import StatusLinks
from tests.kafka_reader import eventually
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import RunningNotifier
from tests.service_settings import STATUS_LINK_SECRET

LINKS = StatusLinks([STATUS_LINK_SECRET])


def events_url(running: RunningNotifier, order_id: str) -> str:
    return f"{running.url}/v1/orders/{order_id}/events?token={LINKS.token(order_id, 'u1')}"


@contextlib.asynccontextmanager
async def stream(browser: httpx.AsyncClient, url: str) -> AsyncIterator[httpx.Response]:
    """A live stream held open; when it opened, read up to its first timeline event. (The reader is kept
    until the end: an abandoned one is closed when collected, and closes the connection with it.)"""
    async with browser.stream("GET", url) as answer:
        if answer.status_code != 200:
            await answer.aread()
            yield answer
            return
        chunks, seen = answer.aiter_text(), ""
        async with asyncio.timeout(30):
            while "event: timeline" not in seen:
                seen += await anext(chunks)
        try:
            yield answer
        finally:
            await chunks.aclose()


async def refused(browser: httpx.AsyncClient, url: str, limit: int) -> None:
    async with stream(browser, url) as answer:
        assert answer.status_code == 429, answer.text
        assert int(answer.headers["retry-after"]) > 0
        body = answer.json()
        assert body["error"] == "too_many_streams" and f"at most {limit} " in body["detail"], body


async def opens(browser: httpx.AsyncClient, url: str) -> bool:
    async with stream(browser, url) as answer:
        return answer.status_code == 200


async def test_the_stream_past_an_orders_limit_others_hold_gets_429_until_one_closes(notifier: StartNotifier) -> None:
    running = await notifier(max_streams_per_order=3)
    limit = running.settings.max_streams_per_order
    _, key = await running.notifier.infra.keys.create("platform", {Scope.ORDERS_READ})
    url = events_url(running, "ord_busy")
    async with (
        httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {key}"}) as platform,
        httpx.AsyncClient(timeout=30) as browser,
        contextlib.AsyncExitStack() as held,
    ):
        key_url = f"{running.url}/v1/orders/ord_busy/events"
        streams = [await held.enter_async_context(stream(platform, key_url)) for _ in range(limit)]
        assert [s.status_code for s in streams] == [200] * limit
        await refused(browser, url, limit)
        assert await opens(browser, events_url(running, "ord_quiet")), "another order is not limited by this one"
        await streams[0].aclose()  # one of the platform's streams ends: the server frees its slot
        await eventually(lambda: opens(browser, url), timeout_s=30, interval_s=0.1)


async def test_the_stream_past_the_servers_limit_gets_429_whatever_the_order(notifier: StartNotifier) -> None:
    running = await notifier(max_streams=2, max_streams_per_order=5)
    limit = running.settings.max_streams
    async with httpx.AsyncClient(timeout=30) as browser, contextlib.AsyncExitStack() as held:
        streams = [
            await held.enter_async_context(stream(browser, events_url(running, f"ord_{n}"))) for n in range(limit)
        ]
        assert [s.status_code for s in streams] == [200] * limit
        await refused(browser, events_url(running, "ord_late"), limit)
        await streams[-1].aclose()
        await eventually(lambda: opens(browser, events_url(running, "ord_late")), timeout_s=30, interval_s=0.1)
