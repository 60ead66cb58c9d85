"""The poster's wait for a free connection is bounded by its timeout, so a delivery's lease (twice the longest
timeout and a margin) outlasts the wait and the request: a request that found no connection in time is not sent,
and is retried, rather than sent after another instance claimed the delivery again. Real HTTP on loopback."""

import asyncio
import time

import pytest
from aiohttp import web

from notifier.adapters.poster import AiohttpPoster
from notifier.ports import DeliveryFailed
from servicekit.netguard import AddressPolicy
from tests.loopback_http import serving


async def test_a_request_that_finds_no_free_connection_within_the_timeout_is_not_sent_and_is_retryable() -> None:
    received: list[int] = []
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        received.append(int(await request.text()))
        await release.wait()
        return web.Response(status=201)

    app = web.Application()
    app.router.add_post("/hook", slow)
    # One connection, and a receiver that does not answer: each request holds it for its whole timeout.
    poster = AiohttpPoster(timeout_s=0.5, policy=AddressPolicy(development=True), max_connections=1)
    async with serving(app) as port:
        url = f"http://127.0.0.1:{port}/hook"
        first = asyncio.create_task(poster.post("webhook", url, b"1", {}))
        while not received:
            await asyncio.sleep(0.01)
        second = asyncio.create_task(poster.post("webhook", url, b"2", {}))  # has the connection after the first
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(DeliveryFailed) as waited:
            await poster.post("webhook", url, b"3", {})  # behind both: no connection within its timeout
        assert waited.value.retry and "no free connection" in str(waited.value), waited.value
        assert 0.4 < time.monotonic() - started < 1.0  # its timeout, not both others' requests
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
        assert all(isinstance(o, DeliveryFailed) and "timed out" in str(o) for o in outcomes), outcomes
        assert received == [1, 2], "the third request never reached the receiver"
        release.set()
        assert (await poster.post("webhook", url, b"4", {})).status == 201  # every connection was given back
    await poster.close()


async def test_a_receiver_answering_what_is_not_http_fails_the_delivery_without_its_url_path_or_request_headers() -> (
    None
):
    """aiohttp's error for an unparsable answer carries the request: its repr put the push endpoint (a capability)
    and the Authorization header (a VAPID JWT, FCM's bearer token) into last_error, which support staff read."""

    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"NOT-HTTP garbage\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    poster = AiohttpPoster(timeout_s=2, policy=AddressPolicy(development=True))
    try:
        url = f"http://127.0.0.1:{port}/wpush/v2/capability-token-of-a-device?x=1"
        with pytest.raises(DeliveryFailed) as failed:
            await poster.post("web push", url, b"x", {"Authorization": "vapid t=secret-jwt, k=key"})
    finally:
        await poster.close()
        server.close()
    told = str(failed.value)
    assert failed.value.retry and "Bad status line" in told and f"127.0.0.1:{port}" in told, told
    assert "capability-token" not in told and "secret-jwt" not in told, told
