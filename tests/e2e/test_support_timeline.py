"""The support API in the local stack's processes, with a support agent's key (support:read and support:act only):
a paid order's timeline holds what payments, the ledger, the reconciler and the notifier each say of it, in time
order, none of them unavailable (each takes the agent's own key); once credited, a re-drive is refused."""

import contextlib
import uuid
from pathlib import Path

import httpx
import pytest

from servicekit.identity import Scope
from tests.conftest import Broker
from tests.e2e.stack import agent_key, paid_order, running_stack
from tests.kafka_reader import eventually

pytestmark = pytest.mark.e2e


async def test_a_support_agent_sees_every_services_part_of_an_order_in_time_order(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> None:
    async with running_stack(broker, database_url, isolation, tmp_path) as (stack, _):
        payments = stack.url("payments")
        agent = await agent_key(stack, f"agent-{uuid.uuid4().hex[:6]}", {Scope.SUPPORT_READ, Scope.SUPPORT_ACT})
        async with httpx.AsyncClient(timeout=30, headers=stack.headers) as platform:
            order_id = await paid_order(platform, stack, "u-help", 600)
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
