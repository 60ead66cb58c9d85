"""payments over a real uvicorn server: bodies past PAYMENTS' limit (CREDITED_MAX_BODY_BYTES) get 413 in
credited's error shape on the fast path and on the framework path alike, before anything is read whole or
stored; a body just under the limit goes through; a refused callback is kept for audit only in part."""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from credited.stack.processes import free_port
from payments.bootstrap import build
from payments.callbacks import REFUSED_BODY_KEPT
from payments.config import Settings
from servicekit.http import serve
from servicekit.signatures import sign
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.service_settings import settings_for

MIB = 1024 * 1024
SECRET = "limit-secret"


@dataclass
class Payments:
    url: str
    settings: Settings
    headers: dict[str, str]

    async def audit(self) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(
            self.settings.database_url, server_settings={"search_path": self.settings.db_schema}
        )
        try:
            return await conn.fetch("SELECT outcome, reason, body FROM callbacks ORDER BY id")
        finally:
            await conn.close()


@pytest.fixture(params=[True, False], ids=["fast-path", "framework"])
async def payments(request, broker: Broker, database_url: str, isolation: str) -> AsyncIterator[Payments]:  # type: ignore[no-untyped-def]
    fast: bool = request.param
    settings = settings_for(
        Settings,
        broker,
        database_url,
        f"{isolation}{int(fast)}",
        psp_secrets={"sim": [SECRET]},
        environment="development",
        fast_path=fast,
    )
    infra, app = await build(settings)
    port = free_port()
    server = asyncio.create_task(serve(app, "127.0.0.1", port))
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        deadline = time.monotonic() + 30
        while True:
            try:
                await client.get(f"{url}/healthz")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "payments did not start"
                await asyncio.sleep(0.05)
    yield Payments(url, settings, await bearer(infra.keys))
    server.cancel()
    await asyncio.gather(server, return_exceptions=True)
    await infra.close()


def padded(document: dict[str, object], size: int) -> bytes:
    """The JSON document followed by spaces up to `size` bytes: still valid JSON, as large as asked."""
    body = json.dumps(document).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


async def streamed(total: int) -> AsyncIterator[bytes]:
    for chunk in chunks(total):
        yield chunk


ORDER = {"user_id": "u1", "amount": 600, "currency": "CNY", "channel": "alipay"}


def paid(order_id: str) -> dict[str, object]:
    return {
        "order_id": order_id,
        "provider_txn_id": "tx-limit",
        "status": "succeeded",
        "amount": 600,
        "currency": "CNY",
        "paid_at": "2026-11-22T08:30:00+08:00",
    }


def too_large(limit: int) -> str:
    return f"request bodies are limited to {limit} bytes"


async def test_a_5_mib_callback_and_a_5_mib_order_get_413_json_and_nothing_is_stored(payments: Payments) -> None:
    limit = payments.settings.max_body_bytes
    huge = padded(ORDER, 5 * MIB)
    json_headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=payments.url, headers=payments.headers, timeout=30) as client:
        answers = [
            await client.post("/v1/orders", content=huge, headers=json_headers),
            await client.post("/v1/orders", content=streamed(5 * MIB), headers=json_headers),
            await client.post(
                "/v1/psp/sim/callbacks", content=huge, headers={"X-Signature": sign(SECRET, huge, int(time.time()))}
            ),
            await client.post("/v1/psp/sim/callbacks", content=streamed(5 * MIB), headers={"X-Signature": "t=1"}),
        ]
    for answer in answers:
        assert answer.status_code == 413, answer.text
        assert answer.json() == {"error": "payload_too_large", "detail": too_large(limit)}
    assert await payments.audit() == []


async def test_an_order_and_a_callback_just_under_the_limit_are_accepted(payments: Payments) -> None:
    limit = payments.settings.max_body_bytes
    async with httpx.AsyncClient(base_url=payments.url, headers=payments.headers, timeout=30) as client:
        order = await client.post(
            "/v1/orders", content=padded(ORDER, limit - 1), headers={"content-type": "application/json"}
        )
        assert order.status_code == 201, order.text
        order_id = order.json()["order_id"]
        body = padded(paid(order_id), limit - 1)
        callback = await client.post(
            "/v1/psp/sim/callbacks", content=body, headers={"X-Signature": sign(SECRET, body, int(time.time()))}
        )
    assert callback.status_code == 200, callback.text
    assert callback.json()["result"] == "applied"
    ((outcome, _, stored),) = await payments.audit()
    assert (outcome, len(stored)) == ("paid", limit - 1)  # an accepted callback is kept whole


async def test_a_refused_callback_is_kept_for_audit_cut_to_its_first_bytes(payments: Payments) -> None:
    limit = payments.settings.max_body_bytes
    body = padded(paid("ord_unsigned"), limit - 1)
    async with httpx.AsyncClient(base_url=payments.url, headers=payments.headers, timeout=30) as client:
        answer = await client.post(
            "/v1/psp/sim/callbacks",
            content=body,
            headers={"X-Signature": sign("not-the-secret", body, int(time.time()))},
        )
    assert answer.status_code == 401 and answer.json()["error"] == "signature_mismatch"
    ((outcome, reason, stored),) = await payments.audit()
    assert outcome == "rejected"
    assert stored == body[:REFUSED_BODY_KEPT]
    assert reason.endswith(f"(body cut to its first {REFUSED_BODY_KEPT} of {limit - 1} bytes)")
