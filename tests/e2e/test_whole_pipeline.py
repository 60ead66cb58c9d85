"""Whole journeys across all four services, on a real broker and a real PostgreSQL."""

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from harness.simulator.run import Load, Simulator, Truth, score, settled
from tests.conftest import Broker
from tests.e2e.stack import DEPLOYED_SHAPE, DRIVER_LIMITS, running_stack
from tests.kafka_reader import eventually

pytestmark = pytest.mark.e2e


async def test_a_thousand_paid_orders_are_credited_exactly_once_and_notified_once(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> None:
    async with running_stack(broker, database_url, isolation, tmp_path, **DEPLOYED_SHAPE) as (stack, receiver):
        truth = Truth()
        async with httpx.AsyncClient(timeout=30, limits=DRIVER_LIMITS, headers=stack.headers) as client:
            sim = Simulator(stack.url("payments"), stack.config.psp_secret, client)
            await sim.drive(Load(orders=1000, rate=250, duplicate_share=0.25), truth)
            assert truth.errors == []
            assert len(truth.paid) == 1000 and truth.duplicate_callbacks > 150

            await eventually(lambda: settled(truth, receiver.received) >= 1000, timeout_s=240, interval_s=0.5)
            result = await score(
                truth,
                receiver.received,
                ledger_url=stack.url("ledger"),
                client=client,
                elapsed_s=0,
                threshold_s=stack.config.threshold_s,
            )
            assert result["credited"] == 1000
            assert result["credited_twice"] == 0
            assert result["balance_mismatches"] == 0

            # Ask about each order until it says credited, a few at a time: a thousand requests at once wait
            # longer for the client's pool than its timeout on a loaded machine.
            waiting = set(truth.paid)
            asking = asyncio.Semaphore(16)

            async def credited(oid: str) -> bool:
                async with asking:
                    answer = await client.get(f"{stack.url('payments')}/v1/orders/{oid}")
                return bool(answer.json()["status"] == "credited")

            async def all_credited() -> bool:
                ordered = sorted(waiting)
                answers = await asyncio.gather(*(credited(oid) for oid in ordered))
                waiting.difference_update(oid for oid, yes in zip(ordered, answers, strict=True) if yes)
                return not waiting

            await eventually(all_credited, timeout_s=60, interval_s=1)

            # The money audit, as the local stack wires it (payments reading the ledger with its own audit:read
            # key), agrees: every paid order credited once, nothing to re-drive.
            since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
            audit = await client.post(f"{stack.url('payments')}/v1/audits", json={"since": since}, timeout=120)
            assert audit.status_code == 200, audit.text
            assert audit.json()["findings"] == [] and audit.json()["redriven"] == []
            assert audit.json()["paid"] == audit.json()["credited"] and audit.json()["refunded"] == {}

        credited_per_order = Counter(
            p["order_id"] for p in receiver.received.payloads.values() if p["status"] == "credited"
        )
        assert set(credited_per_order) == truth.paid
        assert set(credited_per_order.values()) == {1}
        assert receiver.received.duplicates == 0
        assert receiver.received.rejected == 0
