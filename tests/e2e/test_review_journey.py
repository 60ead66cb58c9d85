"""Orders held for risk review, through all four services on a real broker and PostgreSQL: the user hears
`under_review` with the expected time; a released order is credited once, a rejected one is refunded and
never credited."""

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicekit.signatures import sign
from tests.conftest import Broker
from tests.e2e.stack import running_stack
from tests.kafka_reader import eventually

pytestmark = pytest.mark.e2e

LIMIT = 50_000
EXPECTED_S = 600


async def held_order(client: httpx.AsyncClient, payments: str, secret: str, user: str) -> str:
    placed = await client.post(
        f"{payments}/v1/orders",
        json={"user_id": user, "amount": LIMIT + 100, "currency": "CNY", "channel": "alipay", "product": "gems_6480"},
    )
    assert placed.status_code == 201, placed.text
    order_id = str(placed.json()["order_id"])
    body = json.dumps(
        {
            "order_id": order_id,
            "provider_txn_id": f"tx-{order_id}",
            "status": "succeeded",
            "amount": LIMIT + 100,
            "currency": "CNY",
            "paid_at": "2026-11-22T08:30:00Z",
        }
    ).encode()
    paid = await client.post(
        f"{payments}/v1/psp/sim/callbacks", content=body, headers={"X-Signature": sign(secret, body, int(time.time()))}
    )
    assert paid.status_code == 200, paid.text
    return order_id


async def test_a_released_order_is_credited_and_a_rejected_one_refunded_each_after_under_review(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> None:
    review_env = {"PAYMENTS_REVIEW_FIRST_TOPUP_ABOVE_MINOR": str(LIMIT), "PAYMENTS_REVIEW_EXPECTED_S": str(EXPECTED_S)}
    async with running_stack(broker, database_url, isolation, tmp_path, extra_env=review_env) as (stack, receiver):
        payments, secret = stack.url("payments"), stack.config.psp_secret
        async with httpx.AsyncClient(timeout=30, headers=stack.headers) as client:
            released = await held_order(client, payments, secret, "u-released")
            rejected = await held_order(client, payments, secret, "u-rejected")

            def statuses(order_id: str) -> list[dict[str, Any]]:
                return sorted(receiver.received.by_order().get(order_id, []), key=lambda p: p["sequence"])

            await eventually(lambda: statuses(released) and statuses(rejected), timeout_s=60)
            for order_id in (released, rejected):
                [review] = statuses(order_id)
                assert review["status"] == "under_review" and review["estimated_credit_at"]

            for order_id, decision in ((released, "release"), (rejected, "reject")):
                answer = await client.post(f"{payments}/v1/orders/{order_id}/review", json={"decision": decision})
                assert answer.status_code == 200, answer.text

            await eventually(lambda: len(statuses(released)) >= 2 and len(statuses(rejected)) >= 2, timeout_s=60)
            assert [p["status"] for p in statuses(released)] == ["under_review", "credited"]
            assert [p["status"] for p in statuses(rejected)] == ["under_review", "refunded"]

            ledger = stack.url("ledger")
            assert (await client.get(f"{ledger}/v1/orders/{rejected}/entries")).json()["transactions"] == []
            assert (await client.get(f"{ledger}/v1/wallets/u-released")).json()["balances"] == {"CNY": LIMIT + 100}
            assert (await client.get(f"{ledger}/v1/wallets/u-rejected")).json()["balances"] == {}
            refunded = (await client.get(f"{payments}/v1/orders/{rejected}")).json()
            assert refunded["review_status"] == "rejected"
            assert refunded["reviewed_by"]["name"] == "development"  # the stack's key decided
        assert receiver.received.duplicates == 0
