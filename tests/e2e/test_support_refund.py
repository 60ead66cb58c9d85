"""A person's refund through payments' support API, in the local stack's processes, takes the reconciler's path:
payments sends BlockCredit, and only the ledger's final rejection leads to the reconciler's IssueRefund. The ledger
drops every payment's credit (credit_loss 1.0) and the reconciler's threshold is far away, so nothing but support
moves these orders: a paid order whose credit was dropped ends refunded with no credit; an order the ledger credited
(a re-drive) while payments' copy of its status still lagged (the reconciler stopped) ends credited with no refund,
the very race a refund sent straight to payments would have paid twice."""

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.codec import decode
from contracts.commands import IssueRefund
from contracts.events import CreditPosted
from servicekit.identity import Scope
from tests.conftest import Broker
from tests.e2e.stack import agent_key as new_agent_key
from tests.e2e.stack import paid_order, running_stack
from tests.kafka_reader import eventually, read_all

pytestmark = pytest.mark.e2e

AMOUNT = 600


async def test_a_support_refund_refunds_only_an_order_the_ledger_blocked_and_never_one_it_credited(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> None:
    async with running_stack(broker, database_url, isolation, tmp_path, credit_loss=1.0, threshold_s=3600) as (
        stack,
        receiver,
    ):
        payments, ledger = stack.url("payments"), stack.url("ledger")
        agent = f"agent-{uuid.uuid4().hex[:6]}"
        agent_key = await new_agent_key(stack, agent, {Scope.SUPPORT_READ, Scope.SUPPORT_ACT})
        async with (
            httpx.AsyncClient(timeout=30, headers=stack.headers) as platform,
            httpx.AsyncClient(timeout=30, headers=agent_key) as support,
        ):
            users = [f"u-{uuid.uuid4().hex[:6]}" for _ in range(2)]
            dropped, lagging = [await paid_order(platform, stack, user, AMOUNT) for user in users]

            async def credits_dropped() -> bool:
                lost = set((await platform.get(f"{ledger}/v1/faults")).json()["credit_dropped"])
                return {dropped, lagging} <= lost

            await eventually(credits_dropped, timeout_s=60)

            async def status(order_id: str) -> str:
                found = await support.get(f"{payments}/v1/support/orders", params={"order_id": order_id})
                return str(found.json()["orders"][0]["status"])

            async def ledger_kinds(order_id: str) -> list[str]:
                entries = (await platform.get(f"{ledger}/v1/orders/{order_id}/entries")).json()["transactions"]
                return [t["kind"] for t in entries]

            async def act(order_id: str, action: str) -> dict[str, Any]:
                answer = await support.post(
                    f"{payments}/v1/support/orders/{order_id}/actions",
                    json={"action": action, "reason": "user asked for the money back"},
                )
                assert answer.status_code == 202, answer.text
                return dict(answer.json()["action"])

            # A paid order whose credit was dropped: the ledger blocks it, the reconciler refunds it.
            refund = await act(dropped, "refund")
            assert (refund["outcome"], refund["by"]) == ("awaiting_ledger_block", agent)

            async def refunded() -> bool:
                return await status(dropped) == "refunded"

            await eventually(refunded, timeout_s=90, interval_s=0.5)
            assert await ledger_kinds(dropped) == []

            # The ledger credits an order (a re-drive) while payments still holds it uncredited: its status comes
            # from the reconciler, stopped here, so the support API's own check lets the refund through.
            await asyncio.to_thread(stack.services["reconciler"].stop)
            await act(lagging, "redrive_credit")

            async def credited_by_the_ledger() -> bool:
                return await ledger_kinds(lagging) == ["credit"]

            await eventually(credited_by_the_ledger, timeout_s=60)
            assert await status(lagging) != "credited"  # payments' copy lags the ledger
            assert (await act(lagging, "refund"))["outcome"] == "awaiting_ledger_block"

            async def credit_announced_again() -> bool:  # the ledger's answer to the block: the credit it posted
                records = await read_all(broker.bootstrap, f"{isolation}.ledger.events")
                posted = [r for r in records if r.key == lagging.encode()]
                return sum(isinstance(decode(r.value, r.headers)[0], CreditPosted) for r in posted) >= 2

            await eventually(credit_announced_again, timeout_s=60)
            await asyncio.to_thread(stack.start_service, "reconciler")
            await asyncio.to_thread(stack.wait_healthy, "reconciler")

            async def closed_credited() -> bool:
                return await status(lagging) == "credited"

            await eventually(closed_credited, timeout_s=90, interval_s=0.5)
            assert await ledger_kinds(lagging) == ["credit"]
            wallets = [(await platform.get(f"{ledger}/v1/wallets/{user}")).json()["balances"] for user in users]
            assert wallets == [{}, {"CNY": AMOUNT}]

            commands = await read_all(broker.bootstrap, f"{isolation}.payments.commands")
            refunds = [
                (r.key, envelope.producer)
                for r in commands
                for message, envelope in [decode(r.value, r.headers)]
                if isinstance(message, IssueRefund)
            ]
            assert refunds == [(dropped.encode(), "reconciler")]  # one refund, the reconciler's, after the block
            lagging_view = (await support.get(f"{payments}/v1/support/orders/{lagging}")).json()
            assert not [e for e in lagging_view["timeline"] if e["kind"].startswith("refund_")]  # none at payments

            def told(order_id: str) -> list[str]:
                return [p["status"] for p in receiver.received.by_order().get(order_id, [])]

            await eventually(lambda: "refunded" in told(dropped) and "credited" in told(lagging), timeout_s=60)
            assert "credited" not in told(dropped) and "refunded" not in told(lagging)
