"""Risk review over HTTP on the real PostgreSQL, with the held, released and rejected orders' events read
back from the real broker in order."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.topics import Topic
from harness.simulator.run import partition_count
from payments.bootstrap import build
from payments.config import Settings
from servicekit.identity import PostgresKeyStore, Scope
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.kafka_reader import event_types, eventually, read_until
from tests.payments.integration.test_payments_api import callback, post_callback
from tests.service_settings import settings_for

LIMIT = 500


@pytest.fixture
async def api(broker: Broker, database_url: str, isolation: str) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    settings = settings_for(
        Settings,
        broker,
        database_url,
        isolation,
        psp_secrets={"sim": ["new-secret"]},
        environment="development",
        review_first_topup_above_minor=LIMIT,
        review_expected_s=600,
    )
    infra, app = await build(settings)
    relay = asyncio.create_task(infra.relay.run())
    headers = await bearer(infra.keys)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://payments", headers=headers) as client:
        yield client, settings
    relay.cancel()
    await asyncio.gather(relay, return_exceptions=True)
    await infra.close()


async def paid_order(client: httpx.AsyncClient, user: str, amount: int = 600) -> str:
    response = await client.post(
        "/v1/orders",
        json={"user_id": user, "amount": amount, "currency": "CNY", "channel": "alipay", "product": "diamonds_60"},
    )
    assert response.status_code == 201, response.text
    order_id = str(response.json()["order_id"])
    paid = await post_callback(client, callback(order_id, amount=amount, txn=f"tx-{order_id}"))
    assert paid.status_code == 200, paid.text
    return order_id


async def everything_published(broker: Broker, settings: Settings) -> list[str]:
    """Once the outbox is drained: (order id, event type) of every record on payments.events, up to its end."""
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": settings.db_schema})
    try:
        await eventually(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
    finally:
        await conn.close()
    topic = Topic.PAYMENTS_EVENTS.qualified(settings.topic_prefix)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(await partition_count(broker.bootstrap, topic))]
        total = sum((await consumer.end_offsets(parts)).values())
    finally:
        await consumer.stop()
    records = await read_until(broker.bootstrap, topic, lambda r: len(r) >= total)
    return [f"{r.key.decode()}:{t}" for r, t in zip(records, event_types(records), strict=True)]


async def test_a_held_order_is_released_once_and_its_payment_follows_the_release(api, broker: Broker) -> None:  # type: ignore[no-untyped-def]
    client, settings = api
    order_id = await paid_order(client, "u-release")
    order = (await client.get(f"/v1/orders/{order_id}")).json()
    assert order["review_status"] == "held" and order["review_expected_at"] and order["product"] == "diamonds_60"
    responses = await asyncio.gather(
        *(client.post(f"/v1/orders/{order_id}/review", json={"decision": "release", "reason": "ok"}) for _ in range(5))
    )
    assert [r.status_code for r in responses] == [200] * 5
    assert {r.json()["review_status"] for r in responses} == {"released"}
    expected = ["OrderPlaced", "OrderHeld", "OrderReleased", "PaymentSucceeded"]
    assert await everything_published(broker, settings) == [f"{order_id}:{t}" for t in expected]
    refused = await client.post(f"/v1/orders/{order_id}/review", json={"decision": "reject", "reason": "late"})
    assert refused.status_code == 409 and refused.json()["error"] == "review_decided"


async def test_a_rejected_order_publishes_the_rejection_and_never_its_payment(api, broker: Broker) -> None:  # type: ignore[no-untyped-def]
    client, settings = api
    order_id = await paid_order(client, "u-reject")
    rejected = await client.post(f"/v1/orders/{order_id}/review", json={"decision": "reject", "reason": "stolen card"})
    assert rejected.status_code == 200 and rejected.json()["review_status"] == "rejected"
    again = await client.post(f"/v1/orders/{order_id}/review", json={"decision": "reject"})
    assert again.status_code == 200
    published = await everything_published(broker, settings)
    assert [e for e in published if e.startswith(order_id)] == [
        f"{order_id}:{t}" for t in ("OrderPlaced", "OrderHeld", "OrderReviewRejected")
    ]


async def test_review_requests_that_cannot_apply_get_4xx_json_that_names_the_problem(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    missing = await client.post("/v1/orders/ord_missing/review", json={"decision": "release"})
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_order"
    small = await paid_order(client, "u-small", amount=LIMIT)
    assert (await client.get(f"/v1/orders/{small}")).json()["review_status"] is None
    not_held = await client.post(f"/v1/orders/{small}/review", json={"decision": "release"})
    assert not_held.status_code == 409 and not_held.json()["error"] == "not_under_review"
    bad = await client.post(f"/v1/orders/{small}/review", json={"decision": "approve"})
    assert bad.status_code == 422


async def test_a_review_needs_review_decide_and_the_order_shows_the_key_that_decided(api) -> None:  # type: ignore[no-untyped-def]
    client, settings = api
    order_id = await paid_order(client, "u-decider")
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        keys = PostgresKeyStore(pool, settings.identity_schema)
        support = await bearer(keys, *(set(Scope) - {Scope.REVIEW_DECIDE}))
        risk, risk_key = await keys.create(f"risk-desk-{order_id}", {Scope.REVIEW_DECIDE})
    finally:
        await pool.close()
    url, verdict = f"/v1/orders/{order_id}/review", {"decision": "release", "reason": "known customer"}
    refused = await client.post(url, json=verdict, headers=support)
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope", refused.text
    untouched = (await client.get(f"/v1/orders/{order_id}")).json()
    assert untouched["review_status"] == "held" and untouched["reviewed_by"] is None
    decided = await client.post(url, json=verdict, headers={"Authorization": f"Bearer {risk_key}"})
    assert decided.status_code == 200, decided.text
    decider = {"key_id": risk.id, "name": risk.name}
    assert decided.json()["reviewed_by"] == decider
    assert (await client.get(f"/v1/orders/{order_id}")).json()["reviewed_by"] == decider
