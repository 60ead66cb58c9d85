"""The payments HTTP API on the real PostgreSQL, with its events read back from the real broker."""

import asyncio
import json
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import generate_latest

from contracts.topics import Topic
from payments.adapters.orders import PostgresStatusBook
from payments.bootstrap import build
from payments.config import Settings
from payments.ports import StatusChange
from servicekit.identity import Scope
from servicekit.infrastructure import Infrastructure
from servicekit.postgres import create_pool
from servicekit.signatures import SIGNATURE_TOLERANCE_S, sign
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.kafka_reader import event_types, read_until
from tests.service_settings import settings_for


@pytest.fixture
async def built(broker: Broker, database_url: str, isolation: str) -> AsyncIterator[tuple[Infrastructure, FastAPI]]:
    settings = settings_for(
        Settings,
        broker,
        database_url,
        isolation,
        psp_secrets={"sim": ["new-secret", "old-secret"]},
        environment="development",
    )
    infra, app = await build(settings)
    yield infra, app
    await infra.close()


@pytest.fixture
async def api(built: tuple[Infrastructure, FastAPI]) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    infra, app = built
    settings = infra.settings
    assert isinstance(settings, Settings)
    relay = asyncio.create_task(infra.relay.run())
    headers = await bearer(infra.keys)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://payments", headers=headers) as client:
        yield client, settings
    relay.cancel()
    await asyncio.gather(relay, return_exceptions=True)


def callback(order_id: str, amount: int = 600, txn: str = "tx1", status: str = "succeeded") -> bytes:
    return json.dumps(
        {
            "order_id": order_id,
            "provider_txn_id": txn,
            "status": status,
            "amount": amount,
            "currency": "CNY",
            "paid_at": "2026-11-22T08:30:00+08:00",
        }
    ).encode()


async def post_callback(
    client: httpx.AsyncClient, body: bytes, secret: str = "new-secret", at: float | None = None
) -> httpx.Response:
    header = sign(secret, body, int(at if at is not None else time.time()))
    return await client.post("/v1/psp/sim/callbacks", content=body, headers={"X-Signature": header})


async def new_order(client: httpx.AsyncClient, **headers: str) -> str:
    response = await client.post(
        "/v1/orders", json={"user_id": "u1", "amount": 600, "currency": "CNY", "channel": "alipay"}, headers=headers
    )
    assert response.status_code in (200, 201), response.text
    return str(response.json()["order_id"])


async def test_an_order_is_created_paid_and_announced_once_for_50_concurrent_callbacks(api, broker: Broker) -> None:  # type: ignore[no-untyped-def]
    client, settings = api
    order_id = await new_order(client)
    body = callback(order_id)
    responses = await asyncio.gather(*(post_callback(client, body) for _ in range(50)))
    assert sorted(r.json()["result"] for r in responses) == ["applied"] + ["duplicate"] * 49
    order = (await client.get(f"/v1/orders/{order_id}")).json()
    assert order["status"] == "paid" and order["payment_status"] == "succeeded"
    topic = Topic.PAYMENTS_EVENTS.qualified(settings.topic_prefix)
    records = await read_until(broker.bootstrap, topic, lambda r: "PaymentSucceeded" in event_types(r))
    await asyncio.sleep(0.3)
    records = await read_until(broker.bootstrap, topic, lambda r: len(r) >= 2)
    assert sorted(event_types(records)) == ["OrderPlaced", "PaymentSucceeded"]
    assert {r.key for r in records} == {order_id.encode()}


async def test_the_same_idempotency_key_returns_the_same_order_and_a_new_body_is_refused(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    first = await new_order(client, **{"Idempotency-Key": "k-1"})
    assert await new_order(client, **{"Idempotency-Key": "k-1"}) == first
    other = await client.post(
        "/v1/orders",
        json={"user_id": "u1", "amount": 700, "currency": "CNY", "channel": "alipay"},
        headers={"Idempotency-Key": "k-1"},
    )
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"


TAMPERED = b"601"
PAST_TOLERANCE_S = SIGNATURE_TOLERANCE_S + 10
"""Clearly past the tolerance when the service reads its clock: the header carries whole seconds (the test's
`now + 301` truncated could be 300.2 s ahead, and 300 s once the request reached the service), and the service
reads its clock after the test did. The exact boundary is servicekit's unit tests' (test_signatures.py)."""


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("amount", 422, "amount_mismatch"),
        ("tampered", 401, "signature_mismatch"),
        ("wrong-secret", 401, "signature_mismatch"),
        ("old", 401, "signature_expired"),
        ("future", 401, "signature_from_future"),
        ("rotated-secret", 200, None),
        ("paid-before-utc", 422, "invalid_callback"),
    ],
)
async def test_callbacks_are_refused_with_a_clear_error_and_kept_for_audit(api, case, status, error) -> None:  # type: ignore[no-untyped-def]
    client, settings = api
    order_id = await new_order(client)
    body, now = callback(order_id), time.time()
    secret, at, sent = "new-secret", now, body
    if case == "amount":
        body = sent = callback(order_id, amount=601)
    elif case == "tampered":
        sent = body.replace(b"600", TAMPERED)  # one byte differs from what was signed
    elif case == "wrong-secret":
        secret = "wrong-secret"
    elif case == "old":
        at = now - PAST_TOLERANCE_S
    elif case == "future":
        at = now + PAST_TOLERANCE_S
    elif case == "rotated-secret":
        secret = "old-secret"
    elif case == "paid-before-utc":  # signed, valid ISO 8601, before the first instant a time in UTC holds
        body = sent = json.dumps({**json.loads(body), "paid_at": "0001-01-01T00:00:00+01:00"}).encode()
    header = sign(secret, body, int(at))
    response = await client.post("/v1/psp/sim/callbacks", content=sent, headers={"X-Signature": header})
    assert response.status_code == status, response.text
    if error:
        assert response.json()["error"] == error and response.json()["detail"]
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": settings.db_schema})
    try:
        outcome, reason = await conn.fetchrow("SELECT outcome, reason FROM callbacks ORDER BY id DESC LIMIT 1")
    finally:
        await conn.close()
    assert outcome == ("rejected" if error else "paid")
    if error:  # the code, and for a person what was wrong (the amounts: 601 paid against 600)
        assert reason.startswith(error) and (case != "amount" or "601" in reason), reason


async def test_bad_requests_get_4xx_json_that_names_the_problem(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    bad = await client.post("/v1/orders", json={"user_id": "u1", "amount": "6.5", "currency": "cny", "channel": "x"})
    assert bad.status_code == 422
    assert {p["field"] for p in bad.json()["detail"]} == {"amount", "currency"}
    missing = await client.get("/v1/orders/ord_missing")
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_order"
    malformed = await client.post("/v1/psp/sim/callbacks", content=b"{", headers={"X-Signature": "t=1"})
    assert malformed.status_code == 401 and malformed.json()["error"] == "signature_malformed"


def sample(metrics_text: str, series: str) -> float:
    """The value of one series in the Prometheus text format, or 0 when it is absent."""
    for line in metrics_text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_orders_and_callbacks_are_counted_with_configured_labels_only(api, built) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    order_id = await new_order(client, **{"Idempotency-Key": "k-metrics"})
    await new_order(client, **{"Idempotency-Key": "k-metrics"})  # the same order again: not a new one
    other = await client.post(
        "/v1/orders", json={"user_id": "u1", "amount": 600, "currency": "CNY", "channel": "newpay"}
    )
    assert other.status_code == 201
    assert (await post_callback(client, callback(order_id))).status_code == 200
    assert (await post_callback(client, callback(order_id))).status_code == 200
    assert (await post_callback(client, callback(order_id), secret="wrong")).status_code == 401
    await client.get(f"/v1/orders/{order_id}")

    text = generate_latest(built[0].registry).decode()  # what its metrics port serves (servicekit.metrics_server)
    assert sample(text, 'payments_orders_created_total{channel="alipay"}') == 1
    assert sample(text, 'payments_orders_created_total{channel="other"}') == 1
    assert sample(text, 'payments_orders_created_total{channel="wechat"}') == 0
    assert sample(text, 'payments_callbacks_total{outcome="paid",provider="sim"}') == 1
    assert sample(text, 'payments_callbacks_total{outcome="duplicate",provider="sim"}') == 1
    assert sample(text, 'payments_callbacks_total{outcome="rejected",provider="sim"}') == 1
    route = 'credited_http_requests_total{code="200",method="GET",route="/v1/orders/{order_id}",service="payments"}'
    assert sample(text, route) == 1
    assert order_id not in text and "newpay" not in text


async def test_an_idempotency_key_still_binds_its_order_23_hours_later(api) -> None:  # type: ignore[no-untyped-def]
    client, settings = api
    first = await new_order(client, **{"Idempotency-Key": "k-day"})
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": settings.db_schema})
    try:
        await conn.execute("UPDATE idempotency_keys SET created_at = now() - interval '23 hours' WHERE key = 'k-day'")
        again = await client.post(
            "/v1/orders",
            json={"user_id": "u1", "amount": 600, "currency": "CNY", "channel": "alipay"},
            headers={"Idempotency-Key": "k-day"},
        )
        assert again.status_code == 200 and again.json()["order_id"] == first
        other = await client.post(
            "/v1/orders",
            json={"user_id": "u1", "amount": 700, "currency": "CNY", "channel": "alipay"},
            headers={"Idempotency-Key": "k-day"},
        )
        assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
        assert await conn.fetchval("SELECT count(*) FROM orders") == 1
    finally:
        await conn.close()


def with_fast_path(broker: Broker, database_url: str, isolation: str, fast: bool) -> Settings:
    """Settings of a payments that answers its hot routes ahead of FastAPI or not, in a schema of its own."""
    return settings_for(
        Settings,
        broker,
        database_url,
        f"{isolation}{int(fast)}",
        psp_secrets={"sim": ["s"]},
        environment="development",
        fast_path=fast,
    )


TOP_UP = {"user_id": "u1", "amount": 600, "currency": "CNY", "channel": "alipay"}


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "framework"])
async def test_an_idempotency_key_is_its_api_keys_own_and_stays_so_when_the_key_is_rotated_under_its_name(
    broker: Broker, database_url: str, isolation: str, fast: bool
) -> None:
    settings = with_fast_path(broker, database_url, isolation, fast)
    infra, app = await build(settings)
    try:
        _, game = await infra.keys.create("game-backend", {Scope.ORDERS_WRITE})
        _, live = await infra.keys.create("live-backend", {Scope.ORDERS_WRITE})

        def sent_by(key: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {key}", "Idempotency-Key": "topup-1"}

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://payments") as client:
            first = await client.post("/v1/orders", json=TOP_UP, headers=sent_by(game))
            assert first.status_code == 201
            order_id = first.json()["order_id"]
            other = await client.post("/v1/orders", json=TOP_UP, headers=sent_by(live))
            assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
            assert "another API key" in other.json()["detail"]
            assert order_id not in other.text and "token=" not in other.text  # neither the order nor its link
            await infra.keys.revoke("game-backend")
            _, rotated = await infra.keys.create("game-backend", {Scope.ORDERS_WRITE})
            again = await client.post("/v1/orders", json=TOP_UP, headers=sent_by(rotated))
            assert again.status_code == 200 and again.json()["order_id"] == order_id
        conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": settings.db_schema})
        try:
            assert await conn.fetchval("SELECT count(*) FROM orders") == 1
            assert await conn.fetchval("SELECT owner FROM idempotency_keys WHERE key = 'topup-1'") == "game-backend"
        finally:
            await conn.close()
    finally:
        await infra.close()


async def test_a_key_bound_before_owners_were_recorded_still_answers_its_order(api) -> None:  # type: ignore[no-untyped-def]
    client, settings = api
    first = await new_order(client, **{"Idempotency-Key": "k-old"})
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": settings.db_schema})
    try:
        await conn.execute("UPDATE idempotency_keys SET owner = NULL WHERE key = 'k-old'")  # as migration 0010 left it
    finally:
        await conn.close()
    assert await new_order(client, **{"Idempotency-Key": "k-old"}) == first


async def test_an_empty_idempotency_key_is_refused_and_never_makes_a_second_top_up_answer_the_first(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    body = {"user_id": "u-empty", "amount": 600, "currency": "CNY", "channel": "alipay"}
    answers = [await client.post("/v1/orders", json=body, headers={"Idempotency-Key": ""}) for _ in range(2)]
    assert [(a.status_code, a.json().get("error")) for a in answers] == [(422, "invalid_request")] * 2, [
        a.text for a in answers
    ]


async def test_concurrent_orders_with_one_idempotency_key_make_one_order(api) -> None:  # type: ignore[no-untyped-def]
    client, settings = api
    body = {"user_id": "u-key", "amount": 600, "currency": "CNY", "channel": "alipay"}
    made = await asyncio.gather(
        *(client.post("/v1/orders", json=body, headers={"Idempotency-Key": "k-race"}) for _ in range(20))
    )
    assert sorted(a.status_code for a in made) == [200] * 19 + [201]
    assert len({a.json()["order_id"] for a in made}) == 1
    other = await client.post("/v1/orders", json={**body, "amount": 700}, headers={"Idempotency-Key": "k-race"})
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": settings.db_schema})
    try:
        assert await conn.fetchval("SELECT count(*) FROM orders") == 1
    finally:
        await conn.close()


JSON = {"content-type": "application/json"}
ORDER = b'{"user_id":"u1","amount":600,"currency":"CNY","channel":"card"}'
ODD_REQUESTS = [
    ("/v1/orders", {"content-type": "text/plain"}, ORDER),
    ("/v1/orders", {}, ORDER),
    ("/v1/orders", JSON, ORDER[:30]),
    ("/v1/orders", JSON, ORDER.replace(b"600", b"6.5")),
    ("/v1/orders", JSON, ORDER.replace(b"}", b',"x":1}')),
    ("/v1/orders", {**JSON, "idempotency-key": "k" * 201}, ORDER),
    ("/v1/orders", {**JSON, "idempotency-key": ""}, ORDER),
    ("/v1/orders", JSON, b""),
    ("/v1/orders", {**JSON, "authorization": "Bearer ck_live_unknown"}, ORDER),
    ("/v1/orders", {**JSON, "authorization": "Basic dXNlcjpwYXNz"}, ORDER),
    ("/v1/psp/sim/callbacks", {}, b"{}"),
    ("/v1/psp/sim/callbacks", {"x-signature": "t=1,v1=" + "0" * 64}, b'{"order_id":"ord_x"}'),
    ("/v1/psp/%01bad/callbacks", {"x-signature": "t=1"}, b"{}"),
    ("/v1/psp/" + "p" * 65 + "/callbacks", {}, b"{}"),
]


async def test_the_fast_path_answers_odd_requests_exactly_as_the_framework_does(
    broker: Broker, database_url: str, isolation: str
) -> None:
    answers = []
    for fast in (True, False):
        infra, app = await build(with_fast_path(broker, database_url, isolation, fast))
        try:
            transport, headers = httpx.ASGITransport(app=app), await bearer(infra.keys)
            async with httpx.AsyncClient(transport=transport, base_url="http://payments", headers=headers) as client:
                answers.append(
                    [
                        (r.status_code, r.json())
                        for r in [await client.post(path, content=body, headers=h) for path, h, body in ODD_REQUESTS]
                    ]
                )
        finally:
            await infra.close()
    assert answers[0] == answers[1]
    assert all(400 <= status < 500 for status, _ in answers[0])


async def test_an_order_follows_its_newest_status_on_postgresql(api) -> None:  # type: ignore[no-untyped-def]
    client, settings = api
    order_id = await new_order(client)
    pool = await create_pool(settings.database_url, settings.db_schema, min_size=1, max_size=2)
    try:
        statuses = PostgresStatusBook(pool)
        assert await statuses.apply([StatusChange(order_id, "credited", 2)]) == [True]
        assert await statuses.apply([StatusChange(order_id, "delayed", 1)]) == [False]
        assert await statuses.apply([StatusChange(order_id, "credited", 2)]) == [False]
        assert await statuses.apply([StatusChange("ord_nobody", "credited", 1)]) == [None]
    finally:
        await pool.close()
    assert (await client.get(f"/v1/orders/{order_id}")).json()["status"] == "credited"


async def test_orders_with_one_key_cost_one_key_lookup_on_the_fast_path(
    broker: Broker, database_url: str, isolation: str
) -> None:
    settings = settings_for(
        Settings, broker, database_url, isolation, psp_secrets={"sim": ["s"]}, environment="development"
    )
    infra, app = await build(settings)
    try:
        headers = await bearer(infra.keys)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://payments", headers=headers) as client:
            placed = await asyncio.gather(*(new_order(client) for _ in range(20)))
        assert len(set(placed)) == 20
        assert infra.keys.round_trips == 1
        assert infra.authenticator.looked_up == 1 and infra.authenticator.served_from_cache == 19
    finally:
        await infra.close()
