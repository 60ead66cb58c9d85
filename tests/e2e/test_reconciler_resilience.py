"""The reconciler against a real broker: rebalanced between two workers and restarted mid-stream, and
catching up after downtime. No overdue order missed, none flagged twice, no false alarm.

Not here yet: a SIGKILL mid-stream. It passes most runs but not all. Fixed (reconciler.adapters.commits):
commits waited for the changelog, the agent and the ticker run one at a time, and faust's recovery no
longer drops records fetched while it seeks and resumes the flow, nor commits over records the agent
never processed; a never-committed partition is read from its first offset. Still seen on Apache
Kafka, in one run of five with two SIGKILLs and a restart: a worker just started after a SIGKILL was
handed a partition's records from well past its committed offset (ledger.events[2] from 31 with 7
committed). It stops itself rather than apply them, so nothing wrong is committed, but in that run the
restarted worker hit it too and, once the test had killed the other worker, no worker was left. Why
faust (or aiokafka) starts a fresh consumer past the committed offset is not explained yet."""

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from credited.simulator.run import Load, Simulator, Truth, credit_publication_times, settled
from credited.stack.local import LocalStack
from credited.stack.processes import Child, free_port
from tests.conftest import Broker
from tests.e2e.stack import running_stack
from tests.e2e.status_log import delayed_flags, judge_flags
from tests.kafka_reader import eventually

pytestmark = pytest.mark.e2e


def second_reconciler(stack: LocalStack) -> tuple[Child, str]:
    """Another worker of the same faust app: it shares the partitions and their state moves with them."""
    port = free_port()
    env = stack.service_env("reconciler")
    env["RECONCILER_HTTP_PORT"] = str(port)
    env["RECONCILER_DATA_DIR"] = str(stack.config.run_dir / "reconciler-2")
    child = Child(
        "reconciler-2",
        [*stack.services["reconciler"].argv],
        log_path=stack.config.run_dir / "logs" / "reconciler-2.log",
        env=env,
    )
    child.start()
    return child, f"http://127.0.0.1:{port}"


async def healthy(url: str, child: Child) -> None:
    async with httpx.AsyncClient(timeout=2) as client:

        async def ok() -> bool:
            assert child.alive(), child.tail()
            try:
                return (await client.get(f"{url}/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(ok, timeout_s=90, interval_s=0.3)


async def test_overdue_orders_are_flagged_once_through_rebalances_and_a_restart(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> None:
    threshold = 3.0
    async with running_stack(broker, database_url, isolation, tmp_path, threshold_s=threshold, credit_loss=0.1) as (
        stack,
        receiver,
    ):
        truth = Truth()
        second: Child | None = None
        try:
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=50)) as client:
                sim = Simulator(stack.url("payments"), stack.config.psp_secret, client)
                driving = asyncio.create_task(sim.drive(Load(orders=500, rate=25, duplicate_share=0.1), truth))
                await asyncio.sleep(6)
                second, second_url = second_reconciler(stack)  # a rebalance while traffic flows
                await healthy(second_url, second)
                await asyncio.sleep(4)
                await asyncio.to_thread(stack.services["reconciler"].stop)  # SIGTERM mid-stream: a rebalance
                await asyncio.sleep(3)
                await asyncio.to_thread(stack.start_service, "reconciler")
                await asyncio.to_thread(stack.wait_healthy, "reconciler")
                await driving
                assert truth.errors == [] and len(truth.paid) == 500
                await eventually(lambda: settled(truth, receiver.received) >= 500, timeout_s=150, interval_s=0.5)
                dropped = set((await client.get(f"{stack.url('ledger')}/v1/faults")).json()["credit_dropped"])
        finally:
            if second is not None:
                second.stop()
    paid_at = {o: truth.orders[o]["paid_at"] for o in truth.paid}
    verdict = await judge_flags(broker.bootstrap, stack.config.topic_prefix, paid_at, dropped, threshold)
    assert len(dropped) >= 25
    assert verdict == {"missed": [], "false": [], "doubled": []}


async def test_a_reconciler_catching_up_after_downtime_raises_no_false_alarm(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> None:
    threshold = 5.0
    seconds = float(os.environ.get("CREDITED_CATCHUP_SECONDS", "300"))  # the brief asks for 5 minutes
    rate = 10.0
    async with running_stack(broker, database_url, isolation, tmp_path, threshold_s=threshold) as (stack, receiver):
        await asyncio.to_thread(stack.services["reconciler"].stop)
        truth = Truth()
        async with httpx.AsyncClient(timeout=30) as client:
            sim = Simulator(stack.url("payments"), stack.config.psp_secret, client)
            await sim.drive(Load(orders=int(seconds * rate), rate=rate, duplicate_share=0.1), truth)
            topic = f"{stack.config.topic_prefix}ledger.events"

            async def all_credited() -> bool:
                return len(set(await credit_publication_times(stack.bootstrap, topic)) & truth.paid) == len(truth.paid)

            await eventually(all_credited, timeout_s=120, interval_s=1)
            visible = await credit_publication_times(stack.bootstrap, topic)
            late = [o for o in truth.paid if visible[o] > truth.orders[o]["paid_at"] + threshold]
            assert late == [], "the premise: every credit reached the broker before its deadline"
            await asyncio.to_thread(stack.start_service, "reconciler")
            await asyncio.to_thread(stack.wait_healthy, "reconciler")
            await eventually(lambda: settled(truth, receiver.received) >= len(truth.paid), timeout_s=240, interval_s=1)
    assert await delayed_flags(broker.bootstrap, stack.config.topic_prefix) == {}
    assert len(truth.paid) == int(seconds * rate)
