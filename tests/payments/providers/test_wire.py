"""AiohttpWire against a raw HTTP/1.1 server on loopback that closes connections under the requests: a request
that meets a kept-alive connection closed by the provider goes again once on a new one, and no more."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from payments.adapters.providers.transport import RESENT_AFTER_A_RESET, AiohttpWire, WireFailed


@dataclass
class Provider:
    """Answers 200 `ok` with keep-alive; `drops(connection, request)` says which requests it cuts off instead (the
    n-th request on the c-th connection, from 1), closing the connection without an answer."""

    drops: Callable[[int, int], bool]
    seen: list[tuple[int, int]] = field(default_factory=list)
    connections: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection, request = self.connections, 0
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                request += 1
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.seen.append((connection, request))
                if self.drops(connection, request):
                    writer.transport.abort()
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


StartProvider = Callable[[Provider], Awaitable[str]]


@pytest.fixture
async def provider_at() -> AsyncIterator[StartProvider]:
    servers: list[asyncio.Server] = []

    async def start(provider: Provider) -> str:
        server = await asyncio.start_server(provider.serve, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v3/query"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_request_on_a_kept_alive_connection_the_provider_closed_goes_again_on_a_new_one(
    provider_at: StartProvider,
) -> None:
    provider = Provider(drops=lambda connection, request: (connection, request) == (1, 2))
    url = await provider_at(provider)
    wire = AiohttpWire(timeout_s=5)
    try:
        first = await wire.request("POST", url, b"query 1", {"content-type": "application/json"})
        second = await wire.request("POST", url, b"query 2", {"content-type": "application/json"})
    finally:
        await wire.aclose()
    assert (first.status_code, first.content, second.status_code, second.content) == (200, b"ok", 200, b"ok")
    # The second query went out on the first connection, which the provider cut, then on a new one.
    assert provider.seen == [(1, 1), (1, 2), (2, 1)]


async def test_a_provider_that_cuts_every_request_off_is_unanswered_after_one_more_try(
    provider_at: StartProvider,
) -> None:
    provider = Provider(drops=lambda connection, request: True)
    url = await provider_at(provider)
    wire = AiohttpWire(timeout_s=5)
    try:
        with pytest.raises(WireFailed):
            await wire.request("POST", url, b"query", {})
    finally:
        await wire.aclose()
    assert len(provider.seen) == 1 + RESENT_AFTER_A_RESET


async def test_a_provider_answering_what_is_not_http_is_unanswered_without_the_requests_url_or_signed_headers() -> None:
    """aiohttp's error for an unparsable answer carries the request: its repr put the call's URL and its
    Authorization header into the reason payments keeps (a refund's, a query's), which support staff read."""

    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT-HTTP garbage\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    wire = AiohttpWire(timeout_s=2)
    try:
        url = f"http://127.0.0.1:{port}/v3/refund/domestic/refunds/rfd_1?mchid=merchant-secret-path"
        with pytest.raises(WireFailed) as failed:
            await wire.request("GET", url, b"", {"Authorization": 'WECHATPAY2-SHA256-RSA2048 signature="sig-xyz"'})
    finally:
        await wire.aclose()
        server.close()
    told = str(failed.value)
    assert "Bad status line" in told and f"127.0.0.1:{port}" in told, told
    assert "merchant-secret-path" not in told and "sig-xyz" not in told and "RequestInfo" not in told, told
