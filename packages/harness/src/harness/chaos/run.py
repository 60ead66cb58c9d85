"""`credited chaos`: the four services as processes on Apache Kafka and PostgreSQL, traffic through payments,
a schedule of faults injected while it flows, then the whole history checked (harness.chaos.checker)."""

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.topics import Topic
from credited.stack.local import SERVICES, LocalStack, StackConfig
from credited.stack.processes import free_port
from harness.chaos.checker import FINAL, judge, read_history
from harness.chaos.infra import ApacheBroker, FaultyPostgres
from harness.chaos.schedule import Fault, FaultKind, Schedule
from harness.chaos.supervisor import Supervisor
from harness.chaos.traffic import Ledger, Traffic
from harness.simulator.receiver import Received, WebhookReceiver
from harness.simulator.run import partition_count

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChaosOptions:
    schedule: Schedule
    run_dir: Path
    threshold_s: float = 10.0
    settle_s: float = 300.0
    disk_mb: int = 1024
    give_up_s: float = 600.0


@dataclass
class Injected:
    fault: Fault
    started_s: float = 0.0
    ended_s: float = 0.0
    note: str = ""


class Injector:
    """Carries out a schedule on the broker, PostgreSQL and the services, and notes what each fault did."""

    def __init__(self, broker: ApacheBroker, postgres: FaultyPostgres, supervisor: Supervisor) -> None:
        self.broker, self.postgres, self.supervisor = broker, postgres, supervisor
        self.done: list[Injected] = []

    async def run(self, schedule: Schedule) -> None:
        """Each fault at its second, on its own: a SIGKILL lands on time even during an outage."""
        async with asyncio.TaskGroup() as group:
            for fault in schedule.faults:
                group.create_task(self._at(fault))

    async def _at(self, fault: Fault) -> None:
        wait = fault.at_s - self.supervisor.elapsed()
        if wait > 0:
            await asyncio.sleep(wait)
        record = Injected(fault, started_s=round(self.supervisor.elapsed(), 1))
        self.done.append(record)
        try:
            record.note = await self._inject(fault)
        except Exception as exc:  # a fault that could not be injected is reported, the run goes on
            record.note = f"not injected: {exc!r}"[:300]
            log.exception("fault %s could not be injected", fault)
        record.ended_s = round(self.supervisor.elapsed(), 1)
        log.warning("fault %s done: %s", fault.label, record.note)

    async def _inject(self, fault: Fault) -> str:
        if fault.kind is FaultKind.KILL:
            await asyncio.to_thread(self.supervisor.kill, fault.target)
            return "SIGKILL; restarted by the supervisor"
        if fault.kind is FaultKind.BROKER_RESTART:
            await asyncio.to_thread(self.broker.stop)
            await asyncio.sleep(fault.duration_s)
            return f"stopped, started again in {await _timed(self.broker.start):.1f}s"
        if fault.kind is FaultKind.POSTGRES_RESTART:
            await asyncio.to_thread(self.postgres.stop)
            await asyncio.sleep(fault.duration_s)
            return f"stopped, started again in {await _timed(self.postgres.start):.1f}s"
        if fault.kind is FaultKind.READ_ONLY:
            await self.postgres.read_only(True)
            await asyncio.sleep(fault.duration_s)
            await self.postgres.read_only(False)
            return "read-only, sessions ended; writable again"
        return await self._disk_full(fault.duration_s)

    async def _disk_full(self, duration_s: float) -> str:
        if not self.postgres.disk.mounted:
            return "not injected: needs root for a filesystem of PostgreSQL's own"
        filled = await asyncio.to_thread(self.postgres.disk.fill)
        await asyncio.sleep(duration_s)
        self.postgres.disk.free()
        note = f"filled ({filled >> 20} MiB), freed"
        if not self.postgres.alive():
            restart = await _timed(self.postgres.start)
            note += f"; PostgreSQL had stopped (no space for WAL) and was started again in {restart:.1f}s"
        return note


async def _timed(start: Any) -> float:
    began = time.monotonic()
    await asyncio.to_thread(start)
    return time.monotonic() - began


async def dead_letters(bootstrap: str, prefix: str) -> Counter[str]:
    """Every record on the dead-letter topic, counted by where it came from and why (the reason's start)."""
    topic = Topic.DEAD_LETTER.qualified(prefix)
    partitions = [TopicPartition(topic, p) for p in range(await partition_count(bootstrap, topic))]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    found: Counter[str] = Counter()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    h = {k: v.decode(errors="replace") for k, v in r.headers}
                    source = h.get("dlq_source_topic") or h.get("dlq_source", "?")
                    found[f"{source}: {h.get('dlq_reason', '?')[:90]}"] += 1
    finally:
        await consumer.stop()
    return found


def _settled(truth: Ledger, received: Received) -> int:
    finals = {p["order_id"] for p in received.payloads.values() if p["status"] in FINAL}
    return len(truth.paid & finals)


async def _settle(truth: Ledger, received: Received, timeout_s: float) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout_s and _settled(truth, received) < len(truth.paid):
        received.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(received.changed.wait(), 1.0)
    await asyncio.sleep(3)  # late duplicates land before they are counted
    return round(time.monotonic() - began, 1)


def _per_fault(
    done: list[Injected], truth: Ledger, supervisor: Supervisor, received: Received, harmed: list[str]
) -> list[dict[str, Any]]:
    """Per fault, what happened in its window (from its start to 15 s after its end). Harmed orders are laid at
    a fault's door by when they were paid (30 s before it started to 15 s after it ended): a heuristic, which the
    baseline schedules (one kind alone) do not need."""
    wall0 = time.time() - supervisor.elapsed()
    paid_s = [truth.orders[o]["paid_at"] - wall0 for o in harmed if "paid_at" in truth.orders.get(o, {})]
    doubled_s = [received.first_seen[n] - wall0 for n, times in received.deliveries.items() if times > 1]
    rows = []
    for item in sorted(done, key=lambda d: d.started_s):
        lo, hi = item.started_s, item.ended_s + 15
        rows.append(
            {
                "at_s": item.started_s,
                "fault": item.fault.label,
                "duration_s": item.fault.duration_s,
                "outcome": item.note,
                "requests_failed": sum(1 for t, _ in truth.failed_requests if lo <= t <= hi),
                "requests_failed_why": dict(
                    Counter(_why(r) for t, r in truth.failed_requests if lo <= t <= hi).most_common(3)
                ),
                "service_exits": [f"{e.service}({e.code})" for e in supervisor.exits if lo <= e.at_s <= hi],
                "harmed_orders_paid_near": sum(1 for t in paid_s if lo - 30 <= t <= hi),
                "delivered_twice_first_seen_in": sum(1 for t in doubled_s if lo <= t <= hi),
            }
        )
    return rows


def _why(reason: str) -> str:
    """A failed request's reason without its order id, so alike failures count together."""
    return re.sub(r"ord_\w+", "ord_*", reason)[:100]


async def run_chaos(options: ChaosOptions) -> dict[str, Any]:
    run_dir = options.run_dir
    broker = ApacheBroker(run_dir / "kafka")
    postgres = FaultyPostgres(run_dir, options.disk_mb)
    receiver = WebhookReceiver(free_port(), "chaos-webhook-secret")
    await receiver.start()
    stack: LocalStack | None = None
    try:
        await asyncio.gather(asyncio.to_thread(postgres.start), asyncio.to_thread(broker.start))
        config = StackConfig(
            run_dir=run_dir,
            kafka_bootstrap=broker.bootstrap,
            database_url=postgres.dsn,
            kafka_broker="apache",
            ports={name: free_port() for name in SERVICES},
            threshold_s=options.threshold_s,
            webhook_url=receiver.url,
            webhook_secret=receiver.secret,
            psp_secret="chaos-psp-secret",  # noqa: S106 - the run's own provider signs with it
        )
        stack = LocalStack(config)
        await asyncio.to_thread(stack.start)
        return await _drive(options, stack, broker, postgres, receiver)
    finally:
        if stack is not None:
            await asyncio.to_thread(stack.stop)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(postgres.teardown)
        await receiver.stop()


async def _drive(
    options: ChaosOptions, stack: LocalStack, broker: ApacheBroker, postgres: FaultyPostgres, receiver: WebhookReceiver
) -> dict[str, Any]:
    schedule = options.schedule
    supervisor = Supervisor(stack)
    injector = Injector(broker, postgres, supervisor)
    truth = Ledger()
    supervising = asyncio.create_task(supervisor.run())
    try:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(timeout=15, limits=limits, headers=stack.headers) as client:
            traffic = Traffic(stack.url("payments"), stack.config.psp_secret, client, give_up_s=options.give_up_s)
            traffic.started = supervisor.started_at
            await asyncio.gather(traffic.drive(truth, schedule.orders, schedule.rate), injector.run(schedule))
        settle_s = await _settle(truth, receiver.received, options.settle_s)
        history = await read_history(postgres.dsn, stack.config.db_schema_prefix, truth, receiver.received)
        history.dead_letters = await dead_letters(broker.bootstrap, stack.config.topic_prefix)
    finally:
        supervising.cancel()
        await asyncio.gather(supervising, return_exceptions=True)
    verdict = judge(history)
    return {
        "schedule": schedule.name,
        "faults_planned": schedule.counts(),
        "threshold_s": options.threshold_s,
        "elapsed_s": round(supervisor.elapsed(), 1),
        "settle_s": settle_s,
        "faults": _per_fault(injector.done, truth, supervisor, receiver.received, verdict["harmed_orders"]),
        "service_exits": [vars(e) for e in supervisor.exits],
        "restarts": supervisor.restarts,
        **verdict,
    }
