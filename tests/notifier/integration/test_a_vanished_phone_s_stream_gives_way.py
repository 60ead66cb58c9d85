"""A phone that lost its network without a word (a tunnel, a switch from Wi-Fi to mobile data) leaves its live stream
open on the server until the kernel gives up on the connection, many minutes later. The user who opens the page again
must get a live stream: the newest stream of a link takes the place of the link's oldest one, which the server ends.
The bounds still hold: an order never has more streams open than its limit, and the process's limit still refuses
(a stream of another viewer, a platform key, is not ended for a link's: test_live_stream_limits)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx

from tests.notifier.conftest import StartNotifier
from tests.notifier.integration.test_live_stream_limits import events_url, refused, stream


class VanishedPhone:
    """A connection that opened a live stream, read its first timeline, then neither reads nor closes: what the
    server sees of a phone that went out of range."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def rest(self, timeout_s: float) -> bytes:
        """What the server sent after the first timeline, up to the end of the response (or the timeout)."""
        seen = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not seen.endswith(b"0\r\n\r\n"):
                    chunk = await self.reader.read(65536)
                    if not chunk:
                        break
                    seen += chunk
        return seen


@contextlib.asynccontextmanager
async def vanished_phone(url: str) -> AsyncIterator[VanishedPhone]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        request = (
            f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n\r\n"
        )
        writer.write(request.encode())
        seen = b""
        async with asyncio.timeout(30):
            while b"event: timeline" not in seen:
                chunk = await reader.read(65536)
                assert chunk, f"the server closed the stream at once: {seen!r}"
                seen += chunk
        assert seen.startswith(b"HTTP/1.1 200"), seen
        yield VanishedPhone(reader, writer)
    finally:
        writer.close()


async def test_a_user_reopening_the_page_after_the_phone_s_streams_vanished_gets_a_live_stream(
    notifier: StartNotifier,
) -> None:
    running = await notifier(max_streams_per_order=2, sse_heartbeat_s=0.5)
    url = events_url(running, "ord_tunnel")
    async with (
        vanished_phone(url) as oldest,
        vanished_phone(url) as newer,
        httpx.AsyncClient(timeout=30) as browser,
        stream(browser, url) as reopened,
    ):
        assert reopened.status_code == 200, f"the reopened page's stream was refused: {reopened.text}"
        ended = await oldest.rest(timeout_s=10)
        assert b"event: superseded" in ended and ended.endswith(b"0\r\n\r\n"), ended
        assert b"0\r\n\r\n" not in await newer.rest(timeout_s=1.5), "only the oldest stream gives way"
        async with stream(browser, url) as again:
            assert again.status_code == 200, again.text
        assert b"event: superseded" in await newer.rest(timeout_s=10)


async def test_a_link_s_new_stream_never_holds_more_than_the_order_s_limit(notifier: StartNotifier) -> None:
    running = await notifier(max_streams_per_order=2, max_streams=3)
    url = events_url(running, "ord_loop")
    async with httpx.AsyncClient(timeout=30) as browser, contextlib.AsyncExitStack() as held:
        for _ in range(5):  # a link opened in a loop
            opened = await held.enter_async_context(stream(browser, url))
            assert opened.status_code == 200, opened.text
        others = [await held.enter_async_context(stream(browser, events_url(running, "ord_other")))]
        assert others[0].status_code == 200, "the order holds no more than its 2 of the process's 3 streams"
        await refused(browser, events_url(running, "ord_third"), running.settings.max_streams)
