"""Slow HTTP clients against a service's public port (servicekit.serving.serve, what payments' and the notifier's
ports run): connections that open and never finish their request headers."""

import asyncio
import contextlib
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from credited.stack.processes import free_port
from servicekit.serving import HEADERS_WITHIN_S
from tests.kafka_reader import eventually

SERVER = textwrap.dedent(
    """
    import asyncio, resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
    from servicekit.serving import serve

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    asyncio.run(serve(app, "127.0.0.1", int(sys.argv[1])))
    """
)
KEEP_ALIVE_S = 75  # serving.serve's timeout_keep_alive: the longest the service means to keep an idle connection


async def healthy(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        async with httpx.AsyncClient(timeout=3) as client:
            return (await client.get(url)).status_code == 200
    return False


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_connections_that_never_finish_their_headers_do_not_lock_the_service_out_of_its_health_checks() -> None:
    """A client (or a broken load balancer, or slowloris) that opens connections and sends half a request line is
    kept forever: uvicorn times out only idle keep-alive connections after a response, never a connection still
    waiting for its first request's headers, and serving.serve sets no limit. Past the process's descriptors,
    every new connection (the supervisor's /healthz, a platform's POST /v1/orders, the provider's callbacks) is
    refused or hangs: the service is down for as long as the slow clients care to hold their sockets, and the
    database pool and the broker cannot open connections either."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])  # noqa: ASYNC220 - the server, started once
    slow: list[socket.socket] = []
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        await eventually(lambda: healthy(url), timeout_s=30)
        for _ in range(150):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            slow.append(s)
        deadline = time.monotonic() + KEEP_ALIVE_S + 10
        while time.monotonic() < deadline and not await healthy(url):
            await asyncio.sleep(1)
        assert await healthy(url), (
            f"{KEEP_ALIVE_S + 10} s after 150 connections sent half a request, the service still answers no"
            " health check: the half-open requests were never timed out"
        )
    finally:
        for s in slow:
            s.close()
        server.terminate()
        server.wait(10)


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_a_keep_alive_connection_idle_after_its_answer_outlives_the_headers_deadline() -> None:
    """The headers deadline runs from a request's first byte (or the connection's opening) to its last header: a
    client that reuses its connection after a pause longer than the deadline, within the keep-alive time, is
    answered on it (closing it would reset the client's next request)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])  # noqa: ASYNC220 - the server, started once
    try:
        await eventually(lambda: healthy(f"http://127.0.0.1:{port}/healthz"), timeout_s=30)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        for pause_s in (0.0, HEADERS_WITHIN_S + 2):
            await asyncio.sleep(pause_s)
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200"), head
            await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)  # the chunked "ok" and its end
        writer.close()
    finally:
        server.terminate()
        server.wait(10)
