"""Bodies over the limit get 413 in credited's error shape before they are read whole, over a real uvicorn
server on loopback: declared with Content-Length, or streamed in chunks without one."""

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import Request
from prometheus_client import CollectorRegistry

from credited.stack.processes import free_port
from servicekit.http import create_app, serve

MIB = 1024 * 1024


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[int]]]:
    """A credited app as create_app builds it, so with the limit at its default (64 KiB), and a callback route
    that reads the whole body; yields its URL and the sizes of the bodies the route actually got."""
    app = create_app(title="limited", version="1", registry=CollectorRegistry())
    received: list[int] = []

    @app.post("/v1/psp/{provider}/callbacks")
    async def callback(provider: str, request: Request) -> dict[str, int]:
        body = await request.body()
        received.append(len(body))
        return {"bytes": len(body)}

    port = free_port()
    task = asyncio.create_task(serve(app, "127.0.0.1", port))
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                await client.get(f"{url}/healthz")
                break
            except httpx.TransportError:
                assert asyncio.get_running_loop().time() < deadline, "the server did not start"
                await asyncio.sleep(0.05)
    yield url, received
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


async def stream(total: int, size: int) -> AsyncIterator[bytes]:
    for chunk in chunks(total, size):
        yield chunk


async def test_a_5_mib_callback_with_its_length_declared_gets_413_and_never_reaches_the_route(server) -> None:  # type: ignore[no-untyped-def]
    url, received = server
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(f"{url}/v1/psp/sim/callbacks", content=b"x" * (5 * MIB))
    assert answer.status_code == 413
    assert answer.json() == {"error": "payload_too_large", "detail": "request bodies are limited to 65536 bytes"}
    assert received == []


async def test_a_5_mib_callback_streamed_without_a_length_gets_413_once_it_passes_the_limit(server) -> None:  # type: ignore[no-untyped-def]
    url, received = server
    async with httpx.AsyncClient(timeout=30) as client:
        # A generator body goes out chunked, with no Content-Length: only counting can catch it.
        answer = await client.post(f"{url}/v1/psp/sim/callbacks", content=stream(5 * MIB, 64 * 1024))
    assert answer.status_code == 413
    assert answer.json()["error"] == "payload_too_large"
    assert received == []


async def test_bodies_up_to_the_limit_pass_whole(server) -> None:  # type: ignore[no-untyped-def]
    url, received = server
    async with httpx.AsyncClient(timeout=30) as client:
        declared = await client.post(f"{url}/v1/psp/sim/callbacks", content=b"x" * 65536)
        streamed = await client.post(f"{url}/v1/psp/sim/callbacks", content=stream(65536, 1000))
    assert (declared.status_code, streamed.status_code) == (200, 200)
    assert received == [65536, 65536]
