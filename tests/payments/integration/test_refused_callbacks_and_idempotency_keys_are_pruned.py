"""What payments keeps for a while and then deletes, on the real PostgreSQL: refused callbacks (anyone can post them,
kept only for the audit of forged or broken callbacks) and order Idempotency-Keys (a retry's answer, needed while the
order can still be paid). Accepted callbacks and orders are the money record and stay however old."""

import json
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from payments.adapters import orders
from payments.bootstrap import build
from payments.config import Settings
from servicekit.retention import Retention
from servicekit.signatures import sign
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.service_settings import settings_for

SECRET = "prune-secret"
DAY = 86400


@pytest.fixture
async def payments(
    broker: Broker, database_url: str, isolation: str
) -> AsyncIterator[tuple[httpx.AsyncClient, asyncpg.Pool, Retention]]:
    settings = settings_for(
        Settings, broker, database_url, isolation, psp_secrets={"sim": [SECRET]}, environment="development"
    )
    infra, app = await build(settings)
    headers = await bearer(infra.keys)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://payments", headers=headers) as client:
        yield client, infra.pool, app.state.retention
    await infra.close()


async def place(client: httpx.AsyncClient, key: str, expected: int = 201) -> str:
    body = {"user_id": "u1", "amount": 600, "currency": "CNY", "channel": "card"}
    response = await client.post("/v1/orders", json=body, headers={"Idempotency-Key": key})
    assert response.status_code == expected, response.text
    return str(response.json()["order_id"])


async def refused(client: httpx.AsyncClient, order_id: str) -> None:
    body = json.dumps({"order_id": order_id, "status": "succeeded"}).encode()
    response = await client.post("/v1/psp/sim/callbacks", content=body, headers={"X-Signature": "t=1,v1=forged"})
    assert response.status_code == 401, response.text


async def paid(client: httpx.AsyncClient, order_id: str, txn: str = "tx-1", expected: int = 200) -> None:
    """A success the provider signed for `order_id`'s 600 CNY in transaction `txn`."""
    fields = {"order_id": order_id, "provider_txn_id": txn, "status": "succeeded", "amount": 600}
    body = json.dumps(fields | {"currency": "CNY", "paid_at": "2026-11-22T08:30:00+08:00"}).encode()
    signature = sign(SECRET, body, int(time.time()))
    response = await client.post("/v1/psp/sim/callbacks", content=body, headers={"X-Signature": signature})
    assert response.status_code == expected, response.text


async def age(pool: asyncpg.Pool, table: str, stamped: str, days: float) -> None:
    """Every row of `table` so far made `days` old."""
    await pool.execute(f"UPDATE {table} SET {stamped} = now() - make_interval(secs => $1)", days * DAY)


async def test_refused_callbacks_past_their_keep_time_are_deleted_and_accepted_ones_are_kept_however_old(
    payments: tuple[httpx.AsyncClient, asyncpg.Pool, Retention],
) -> None:
    client, pool, retention = payments
    order_id = await place(client, "k-callbacks")
    for _ in range(3):
        await refused(client, order_id)
    await paid(client, order_id)
    await age(pool, "callbacks", "received_at", 31)  # past the 30 days refused callbacks are kept
    await refused(client, order_id)  # this month's: still there for an audit
    assert await retention.prune() == 3
    rows = await pool.fetch("SELECT outcome, received_at > now() - interval '1 day' AS fresh FROM callbacks")
    assert sorted((r["outcome"], r["fresh"]) for r in rows) == [("paid", False), ("rejected", True)]
    assert await pool.fetchval("SELECT payment_status FROM orders WHERE order_id = $1", order_id) == "succeeded"


async def test_a_refused_callback_its_provider_signed_about_an_order_is_kept_however_old(
    payments: tuple[httpx.AsyncClient, asyncpg.Pool, Retention],
) -> None:
    """Refused, but the provider's word that it took money: a second charge on a paid order (a support case asks a
    person to refund it) or a payment for an order payments never had. Not junk anyone can post: kept."""
    client, pool, retention = payments
    order_id = await place(client, "k-second-charge")
    await paid(client, order_id, "tx-1")
    await paid(client, order_id, "tx-2", expected=409)  # already_paid: a second charge
    await paid(client, "ord_never_placed", "tx-3", expected=404)  # unknown_order
    await age(pool, "callbacks", "received_at", 365)
    assert await retention.prune() == 0
    reasons = sorted(r["reason"] for r in await pool.fetch("SELECT reason FROM callbacks WHERE outcome = 'rejected'"))
    assert [reason.split(":")[0] for reason in reasons] == ["already_paid", "unknown_order"], reasons


async def test_idempotency_keys_past_their_keep_time_are_deleted_and_a_retry_with_one_then_places_a_new_order(
    payments: tuple[httpx.AsyncClient, asyncpg.Pool, Retention],
) -> None:
    client, pool, retention = payments
    old = await place(client, "k-old")
    await age(pool, "idempotency_keys", "created_at", 8)  # past the 7 days keys are kept
    fresh = await place(client, "k-fresh")
    assert await retention.prune() == 1
    assert [r["key"] for r in await pool.fetch("SELECT key FROM idempotency_keys")] == ["k-fresh"]
    assert await place(client, "k-fresh", expected=200) == fresh  # a retry within the keep time: the first order
    again = await place(client, "k-old")  # long after the first order stopped being payable: a new request
    assert again not in (old, fresh)
    orders = {r["order_id"] for r in await pool.fetch("SELECT order_id FROM orders")}
    assert orders == {old, fresh, again}  # orders are never pruned


@pytest.mark.parametrize("table", ["callbacks", "idempotency_keys"])
async def test_each_prune_finds_the_old_rows_by_an_index_not_by_reading_the_whole_table(
    payments: tuple[httpx.AsyncClient, asyncpg.Pool, Retention], table: str
) -> None:
    _, pool, retention = payments
    (pruned,) = [p for p in retention.pruned if p.table == table]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")  # a scan is then chosen only when nothing else can be
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {pruned.statement}", pruned.keep_s, 5000))
    assert f"Seq Scan on {table}" not in plan, plan


async def test_a_retry_whose_idempotency_key_the_retention_deletes_while_it_is_placed_gets_an_order_not_a_500(
    payments: tuple[httpx.AsyncClient, asyncpg.Pool, Retention], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retention's batch commits between the placing statement, which found the key still held by its first
    order (past the keep time), and the read of that holder, which finds it gone."""
    client, pool, retention = payments
    old = await place(client, "k-old")
    await age(pool, "idempotency_keys", "created_at", 8)  # past the 7 days keys are kept
    fetch, pruned = asyncpg.pool.Pool.fetch, []

    async def pruned_before_the_holders_are_read(self: asyncpg.Pool, query: str, *args: object) -> list[asyncpg.Record]:
        if query == orders._HOLDERS and not pruned:
            pruned.append(await retention.prune())
        return await fetch(self, query, *args)

    monkeypatch.setattr(asyncpg.pool.Pool, "fetch", pruned_before_the_holders_are_read)
    again = await place(client, "k-old")  # a new request now that its key is gone
    assert pruned == [1]
    assert again != old
    keys = [(r["key"], r["order_id"]) for r in await pool.fetch("SELECT key, order_id FROM idempotency_keys")]
    assert keys == [("k-old", again)]
    assert {r["order_id"] for r in await pool.fetch("SELECT order_id FROM orders")} == {old, again}
