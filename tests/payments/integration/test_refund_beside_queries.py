"""A refund reaches a provider while payments' query worker has every query it may keep in flight waiting on
that provider: the wire's connections the worker never fills are there for it."""

import asyncio

from aiohttp import web

from payments.adapters.providers.transport import MAX_CONNECTIONS, QUERIES_IN_FLIGHT, AiohttpWire, Reply
from tests.loopback_http import serving


async def test_a_refund_is_answered_while_the_most_queries_the_worker_keeps_wait_on_a_slow_provider() -> None:
    release = asyncio.Event()
    waiting = 0

    async def query(_: web.Request) -> web.Response:
        nonlocal waiting
        waiting += 1
        await release.wait()
        return web.json_response({"trade_state": "NOTPAY"})

    async def refund(_: web.Request) -> web.Response:
        return web.json_response({"status": "SUCCESS"})

    app = web.Application()
    app.router.add_post("/query", query)
    app.router.add_post("/refund", refund)
    # The timeout is the refund's: had it queued for a connection behind the queries, it would run out there.
    wire = AiohttpWire(timeout_s=10.0)
    assert QUERIES_IN_FLIGHT < MAX_CONNECTIONS
    queries: list[asyncio.Task[Reply]] = []
    async with serving(app) as port:
        try:
            queries = [
                asyncio.create_task(wire.request("POST", f"http://127.0.0.1:{port}/query", b"{}", {}))
                for _ in range(QUERIES_IN_FLIGHT)
            ]
            while waiting < QUERIES_IN_FLIGHT:  # every query holds a connection, the provider answering none
                await asyncio.sleep(0.01)
            answer = await wire.request("POST", f"http://127.0.0.1:{port}/refund", b"{}", {})
            assert answer.status_code == 200 and not any(q.done() for q in queries)
            release.set()
            assert all(r.status_code == 200 for r in await asyncio.gather(*queries))
        finally:
            release.set()
            await asyncio.gather(*queries, return_exceptions=True)
            await wire.aclose()
