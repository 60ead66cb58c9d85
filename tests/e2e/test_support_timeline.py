"""The support API in the local stack's processes, with a support agent's key (support:read and support:act only):
a paid order's timeline holds what payments, the ledger, the reconciler and the notifier each say of it, in time
order, none of them unavailable (each takes the agent's own key); once credited, a re-drive is refused."""

import contextlib
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from servicekit.identity import PostgresKeyStore, Scope
from servicekit.signatures import sign
from tests.conftest import Broker
from tests.e2e.stack import running_stack
from tests.kafka_reader import eventually

pytestmark = pytest.mark.e2e


async def support_key(database_url: str, schema: str) -> dict[str, str]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        _, key = await PostgresKeyStore(pool, schema).create(
            f"agent-{uuid.uuid4().hex[:6]}", {Scope.SUPPORT_READ, Scope.SUPPORT_ACT}
        )
    finally:
        await pool.close()
    return {"Authorization": f"Bearer {key}"}


async def test_a_support_agent_sees_every_services_part_of_an_order_in_time_order(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> None:
    async with running_stack(broker, database_url, isolation, tmp_path) as (stack, _):
        payments = stack.url("payments")
        agent = await support_key(database_url, stack.config.identity_schema)
        async with httpx.AsyncClient(timeout=30, headers=stack.headers) as platform:
            placed = await platform.post(
                f"{payments}/v1/orders",
                json={"user_id": "u-help", "amount": 600, "currency": "CNY", "channel": "alipay"},
            )
            order_id = placed.json()["order_id"]
            body = json.dumps(
                {
                    "order_id": order_id,
                    "provider_txn_id": f"tx-{order_id}",
                    "status": "succeeded",
                    "amount": 600,
                    "currency": "CNY",
                    "paid_at": datetime.now(UTC).isoformat(),
                }
            ).encode()
            signature = sign(stack.config.psp_secret, body, int(time.time()))
            paid = await platform.post(
                f"{payments}/v1/psp/sim/callbacks", content=body, headers={"X-Signature": signature}
            )
            assert paid.status_code == 200, paid.text
        async with httpx.AsyncClient(timeout=30, headers=agent) as support:
            seen: dict[str, object] = {}

            async def every_service_told() -> bool:
                answer = await support.get(f"{payments}/v1/support/orders/{order_id}")
                assert answer.status_code == 200, answer.text
                seen.update(answer.json())
                sources = {e["source"] for e in answer.json()["timeline"]}
                return sources >= {"payments", "ledger", "reconciler", "notifier"} and not answer.json()["unavailable"]

            with contextlib.suppress(AssertionError):  # the assertions below say what was missing
                await eventually(every_service_told, timeout_s=90, interval_s=0.5)
            timeline, unavailable = seen["timeline"], seen["unavailable"]
            assert isinstance(timeline, list)
            assert {e["source"] for e in timeline} >= {"payments", "ledger", "reconciler", "notifier"}, seen
            assert unavailable == [], unavailable
            assert [e["at"] for e in timeline] == sorted(e["at"] for e in timeline)
            kinds = [(e["source"], e["kind"]) for e in timeline]
            assert kinds.index(("payments", "order_placed")) < kinds.index(("ledger", "credit")), kinds

            async def credited() -> bool:
                found = await support.get(f"{payments}/v1/support/orders", params={"order_id": order_id})
                return bool(found.json()["orders"][0]["status"] == "credited")

            await eventually(credited, timeout_s=60)
            redrive = await support.post(
                f"{payments}/v1/support/orders/{order_id}/actions",
                json={"action": "redrive_credit", "reason": "user says nothing arrived"},
            )
            assert (redrive.status_code, redrive.json()["error"]) == (409, "already_credited"), redrive.text
