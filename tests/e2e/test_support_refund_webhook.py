"""What the platform backend's webhook says about a refund a person asked through payments' support API, in the local
stack's processes: why the order changed, as a stable code, never the staff member's key name, their own note or
the provider's words about a failed refund. Those stay on the staff-facing views (the notifier's notifications of
the order, read with a support key). The ledger drops every credit (credit_loss 1.0), the reconciler's threshold is
far away, and the simulated provider declines every refund, so the order goes remediating, then needs_support."""

import uuid
from pathlib import Path

import httpx
import pytest

from servicekit.identity import Scope
from tests.conftest import Broker
from tests.e2e.stack import agent_key as new_agent_key
from tests.e2e.stack import paid_order, running_stack
from tests.kafka_reader import eventually

pytestmark = pytest.mark.e2e

NOTE = "Mrs Lin phoned twice, her son used the card"


async def test_a_support_refund_s_webhook_says_why_by_code_and_keeps_the_staff_s_name_and_note_to_staff(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> None:
    declines = {"PAYMENTS_SIM_REFUND_FAILURE_SHARE": "1.0"}
    async with running_stack(
        broker, database_url, isolation, tmp_path, credit_loss=1.0, threshold_s=3600, extra_env=declines
    ) as (stack, receiver):
        payments, ledger, notifier = stack.url("payments"), stack.url("ledger"), stack.url("notifier")
        agent = f"agent-{uuid.uuid4().hex[:6]}"
        agent_key = await new_agent_key(stack, agent, {Scope.SUPPORT_READ, Scope.SUPPORT_ACT})
        async with (
            httpx.AsyncClient(timeout=30, headers=stack.headers) as platform,
            httpx.AsyncClient(timeout=30, headers=agent_key) as support,
        ):
            order_id = await paid_order(platform, stack, f"u-{uuid.uuid4().hex[:6]}", 600)

            async def credit_dropped() -> bool:
                return order_id in (await platform.get(f"{ledger}/v1/faults")).json()["credit_dropped"]

            await eventually(credit_dropped, timeout_s=60)
            answer = await support.post(
                f"{payments}/v1/support/orders/{order_id}/actions", json={"action": "refund", "reason": NOTE}
            )
            assert answer.status_code == 202, answer.text

            def told() -> dict[str, dict[str, object]]:
                return {str(p["status"]): p for p in receiver.received.by_order().get(order_id, [])}

            await eventually(lambda: {"remediating", "needs_support"} <= told().keys(), timeout_s=90, interval_s=0.5)
            bodies = told()
            for status in ("remediating", "needs_support"):
                said = str(bodies[status]["reason"])
                assert agent not in said and NOTE not in said and "declined" not in said, (status, said)
            assert (bodies["remediating"]["reason"], bodies["needs_support"]["reason"]) == (
                "support_refund",
                "refund_failed",
            )

            seen = (await support.get(f"{notifier}/v1/orders/{order_id}/notifications")).json()["notifications"]
            internal = {n["status"]: n["reason"] for n in seen}
            assert agent in internal["remediating"] and NOTE in internal["remediating"]
            assert internal["needs_support"] == "refund failed: provider declined the refund"
