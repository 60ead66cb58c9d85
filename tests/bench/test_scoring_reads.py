"""Scoring reads the ledger's books order by order over aiohttp (harness.simulator.run.fast_reads): with the
run's API key, and a refusal is an error, never a book read as empty."""

import aiohttp
import pytest
from aiohttp import web

from harness.simulator.run import fast_reads
from tests.loopback_http import serving


async def test_fast_reads_send_the_key_and_parse_the_books_and_a_refused_read_raises() -> None:
    seen: list[str | None] = []

    async def entries(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bearer k":
            return web.json_response({"error": "unauthenticated"}, status=401)
        return web.json_response({"order_id": request.match_info["oid"], "transactions": [{"kind": "credit"}]})

    app = web.Application()
    app.router.add_get("/v1/orders/{oid}/entries", entries)
    async with serving(app) as port:
        async with fast_reads({"Authorization": "Bearer k"}) as get:
            body = await get(f"http://127.0.0.1:{port}/v1/orders/ord_1/entries")
        assert body == {"order_id": "ord_1", "transactions": [{"kind": "credit"}]}
        async with fast_reads({"Authorization": "Bearer wrong"}) as get:
            with pytest.raises(aiohttp.ClientResponseError) as refused:
                await get(f"http://127.0.0.1:{port}/v1/orders/ord_2/entries")
        assert refused.value.status == 401
        assert seen == ["Bearer k", "Bearer wrong"]
