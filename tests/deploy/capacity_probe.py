"""Per-core throughput of each stage, the figures docs/capacity.md is derived from. Not a test: run it by hand.

    .venv/bin/python -m tests.deploy.capacity_probe --orders 20000 --stages ledger,reconciler,notifier,payments,hotrow

Apache Kafka (scripts/apache-kafka) and an embedded PostgreSQL are started in a temporary directory. Each
stage runs ONE instance of one service: it is started, stopped with SIGSTOP once it has joined its group,
its input topic is filled, and it is let go (SIGCONT) until its output is complete. A stage reports the wall
time and the CPU seconds the service, PostgreSQL and the broker spent on the drain, PostgreSQL commits and
WAL bytes. Dividing the work by the service's CPU seconds gives a per-core figure that holds on a busy
machine; the wall rate does not.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from contracts.codec import encode, envelope_for
from contracts.events import CreditPosted, OrderPlaced, OrderStatus, OrderStatusChanged, PaymentSucceeded
from contracts.topics import Topic
from credited.stack.embedded import FRESH_STATISTICS, EmbeddedPostgres
from credited.stack.local import SERVICES, LocalStack, StackConfig
from credited.stack.processes import Child, free_port
from harness.simulator.receiver import WebhookReceiver
from harness.simulator.run import Load, Simulator, Truth
from tests.deploy.groups import create_changelog

ROOT = Path(__file__).resolve().parents[2]
TICK = os.sysconf("SC_CLK_TCK")
PARTITIONS = 6


def cpu_s(pid: int, *, with_children: bool = False) -> float:
    """CPU seconds of a process; with_children adds its live children and the ones it has reaped."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = int(fields[11]) + int(fields[12])
    if with_children:
        total += int(fields[13]) + int(fields[14])
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                child = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(child[1]) == pid:
                total += int(child[11]) + int(child[12])
    return total / TICK


@dataclass
class Machine:
    """The broker and PostgreSQL every stage shares, with their pids for CPU accounting."""

    bootstrap: str
    broker_pid: int
    postgres: EmbeddedPostgres
    reader: AIOKafkaConsumer

    async def lock_waiters(self, seen: Counter[str]) -> int:
        """PostgreSQL backends waiting for a lock held by another transaction, right now; `seen` counts the
        statements they wait in, with what the backends blocking them are doing."""
        conn = await asyncpg.connect(self.postgres.dsn)
        try:
            rows = await conn.fetch(
                "SELECT w.wait_event, left(w.query, 70) AS query,"
                " coalesce(string_agg(DISTINCT b.state || ' ' || left(b.query, 70), ' | '), '?') AS blocker"
                " FROM pg_stat_activity w"
                " LEFT JOIN pg_stat_activity b ON b.pid = ANY(pg_blocking_pids(w.pid))"
                " WHERE w.wait_event_type = 'Lock' GROUP BY w.pid, w.wait_event, w.query"
            )
        finally:
            await conn.close()
        seen.update(f"{r['wait_event']}: {r['query']} <- {r['blocker']}" for r in rows)
        return len(rows)

    async def sample(self, *services: Child) -> dict[str, float]:
        conn = await asyncpg.connect(self.postgres.dsn)
        try:
            commits = await conn.fetchval("SELECT sum(xact_commit) FROM pg_stat_database")
            wal = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
        finally:
            await conn.close()
        assert self.postgres.child is not None
        return {
            "t": time.monotonic(),
            "service_cpu_s": sum(cpu_s(service.pid) for service in services),
            "postgres_cpu_s": cpu_s(self.postgres.child.pid, with_children=True),
            "broker_cpu_s": cpu_s(self.broker_pid),
            "pg_commits": float(commits),
            "wal_bytes": float(wal),
        }


def delta(before: dict[str, float], after: dict[str, float], work: int, unit: str) -> dict[str, Any]:
    d = {k: after[k] - before[k] for k in before}
    out: dict[str, Any] = {"work": work, "unit": unit, "wall_s": round(d["t"], 2)}
    out["wall_rate_per_s"] = round(work / d["t"])
    for key in ("service_cpu_s", "postgres_cpu_s", "broker_cpu_s"):
        out[key] = round(d[key], 2)
        out[key.replace("_cpu_s", "_per_cpu_s")] = round(work / d[key]) if d[key] > 0 else None
    out["pg_commits_per_unit"] = round(d["pg_commits"] / work, 3)
    if "lock_waiters" in after:
        out["mean_lock_waiters"] = round(after["lock_waiters"], 2)
    out["wal_bytes_per_unit"] = round(d["wal_bytes"] / work)
    return out


async def produce(bootstrap: str, topic: str, batch: list[tuple[str, Any]]) -> None:
    """Batched, as a well-tuned producer sends: linger 5 ms, up to 512 KiB per partition batch."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, r.value, key=r.key, headers=r.headers) for _, r in batch]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def count(reader: AIOKafkaConsumer, topic: str) -> int:
    """Records on the topic (its partitions' end offsets; no transactions, so no control records)."""
    ends = await reader.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
    return sum(ends.values())


async def _at_least(reader: AIOKafkaConsumer, topic: str, n: int) -> bool:
    return await count(reader, topic) >= n


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("stage did not finish")
        await asyncio.sleep(0.2)


def payment(run: str, i: int, users: int, *, round_: str = "") -> PaymentSucceeded:
    """The i-th paid order of a run, by one of `users` users; orders of another `round_` of the run are other
    orders of the same users."""
    return PaymentSucceeded(
        order_id=f"ord_{run}{round_}_{i}",
        user_id=f"u_{run}_{i % users}",
        amount=random.choice((100, 600, 3000, 6800)),
        currency="CNY",
        channel=random.choice(("alipay", "wechat", "card", "carrier")),
        provider="sim",
        provider_txn_id=f"sim-{run}{round_}-{i}",
        paid_at=datetime.now(UTC),
    )


class Probe:
    def __init__(self, machine: Machine, run_dir: Path, orders: int, receiver: WebhookReceiver) -> None:
        self.m, self.run_dir, self.n, self.receiver = machine, run_dir, orders, receiver
        self.run = f"r{random.randrange(16**6):06x}"
        self.waits: Counter[str] = Counter()
        self.stacks: Counter[str] = Counter()  # a stage named twice runs on topics and schemas of its own
        self.fills: list[tuple[int, float]] = []  # (records produced in batches, broker CPU seconds)
        self.filled = 0

    def stack(self, stage: str) -> LocalStack:
        self.stacks[stage] += 1
        if self.stacks[stage] > 1:
            stage = f"{stage}{self.stacks[stage]}"
        stack = LocalStack(
            StackConfig(
                run_dir=self.run_dir / stage,
                kafka_bootstrap=self.m.bootstrap,
                database_url=self.m.postgres.dsn,
                kafka_broker="apache",
                ports={name: free_port() for name in SERVICES},
                topic_prefix=f"{self.run}{stage}.",
                db_schema_prefix=f"{self.run}{stage}_",
                webhook_url=self.receiver.url,
                webhook_secret=self.receiver.secret,
                partitions=PARTITIONS,
            )
        )
        return stack

    async def started(self, stack: LocalStack, name: str) -> Child:
        if name == "reconciler":
            await create_changelog(self.m.bootstrap, stack.config.topic_prefix, PARTITIONS)
        child = stack.start_service(name)
        await asyncio.to_thread(stack.wait_healthy, name)
        if not stack.api_key:  # the stack's own start makes it once its services run; a stage starts only one
            await asyncio.to_thread(stack.create_key)
        await asyncio.sleep(3)  # the consumer group settles
        return child

    async def produce(self, topic: str, batch: list[tuple[str, Any]]) -> None:
        self.filled = len(batch)
        await produce(self.m.bootstrap, topic, batch)

    async def drain(
        self, children: list[Child], fill: Callable[[], Awaitable[None]], done: Callable[[], Awaitable[bool]]
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Fill the input while the instances are stopped, then time them until `done`; `lock_waiters` in
        the result is the mean number of PostgreSQL backends waiting on a lock during the drain."""
        for child in children:
            os.kill(child.pid, signal.SIGSTOP)
        broker_before = cpu_s(self.m.broker_pid)
        try:
            await fill()
            self.fills.append((self.filled, cpu_s(self.m.broker_pid) - broker_before))
        finally:
            before = await self.m.sample(*children)
            for child in children:
                os.kill(child.pid, signal.SIGCONT)
        waiters: list[int] = []

        async def finished() -> bool:
            waiters.append(await self.m.lock_waiters(self.waits))
            return await done()

        await until(finished)
        after = await self.m.sample(*children)
        after["lock_waiters"] = before["lock_waiters"] = 0.0
        after["lock_waiters"] = sum(waiters) / len(waiters)
        return before, after

    async def ledger(self, instances: int = 1, known_users: bool = False) -> dict[str, Any]:
        """Credits drained by `instances` ledger instances sharing one database. With `known_users`, every
        wallet exists before the measured drain (a first round credits one order per user), as for a
        platform's returning users; otherwise a fifth of the credits open a new wallet."""
        stage = f"ledger{instances}{'known' if known_users else ''}"
        stack = self.stack(stage)
        p = stack.config.topic_prefix
        users = max(1, self.n // 5)
        try:
            children = [await self.started(stack, "ledger")]
            for i in range(2, instances + 1):
                children.append(stack.start_instance("ledger", i))
                await asyncio.to_thread(stack.wait_instance_healthy, "ledger", i)
            await asyncio.sleep(3)
            first = 0
            if known_users:
                first = users
                await produce(
                    self.m.bootstrap,
                    Topic.PAYMENTS_EVENTS.qualified(p),
                    _enc([payment(self.run, i, users, round_="w") for i in range(users)]),
                )
                await until(lambda: _at_least(self.m.reader, Topic.LEDGER_EVENTS.qualified(p), first))
            batch = _enc([payment(self.run, i, users) for i in range(self.n)])

            async def done() -> bool:
                return await count(self.m.reader, Topic.LEDGER_EVENTS.qualified(p)) >= first + self.n

            before, after = await self.drain(
                children, lambda: self.produce(Topic.PAYMENTS_EVENTS.qualified(p), batch), done
            )
            waits, self.waits = self.waits, Counter()
            return delta(before, after, self.n, "credits") | {"instances": instances, "waits": waits.most_common(3)}
        finally:
            await asyncio.to_thread(stack.stop)

    async def ledger2(self) -> dict[str, Any]:
        """Two ledger instances on one database: does the rate double, or do they queue on a lock?"""
        return await self.ledger(instances=2)

    async def ledger1known(self) -> dict[str, Any]:
        return await self.ledger(instances=1, known_users=True)

    async def ledger2known(self) -> dict[str, Any]:
        return await self.ledger(instances=2, known_users=True)

    async def reconciler(self) -> dict[str, Any]:
        """Three events per order: OrderPlaced and PaymentSucceeded, then CreditPosted (in that order, as in life)."""
        stack = self.stack("reconciler")
        p = stack.config.topic_prefix
        users = max(1, self.n // 5)
        paid = [payment(self.run, i, users) for i in range(self.n)]
        placed = [
            OrderPlaced(
                order_id=m.order_id,
                user_id=m.user_id,
                amount=m.amount,
                currency=m.currency,
                channel=m.channel,
                placed_at=m.paid_at,
            )
            for m in paid
        ]
        credits = [
            CreditPosted(
                order_id=m.order_id,
                user_id=m.user_id,
                amount=m.amount,
                currency=m.currency,
                transaction_id=f"tx-{m.order_id}",
                credited_at=datetime.now(UTC),
            )
            for m in paid
        ]
        first = [r for pair in zip(placed, paid, strict=True) for r in pair]
        try:
            child = await self.started(stack, "reconciler")
            group = f"{p}credited-reconciler"

            async def payments_consumed() -> bool:
                return await _committed(self.m.bootstrap, group, Topic.PAYMENTS_EVENTS.qualified(p)) >= 2 * self.n

            b1, a1 = await self.drain(
                [child],
                lambda: self.produce(Topic.PAYMENTS_EVENTS.qualified(p), _enc(first)),
                payments_consumed,
            )

            async def statuses() -> bool:
                return await count(self.m.reader, Topic.ORDERS_STATUS.qualified(p)) >= self.n

            b2, a2 = await self.drain(
                [child], lambda: self.produce(Topic.LEDGER_EVENTS.qualified(p), _enc(credits)), statuses
            )
            summed = {k: (a1[k] - b1[k]) + (a2[k] - b2[k]) for k in a1 if k != "lock_waiters"}
            return delta(dict.fromkeys(summed, 0.0), summed, 3 * self.n, "events")
        finally:
            await asyncio.to_thread(stack.stop)

    async def notifier(self) -> dict[str, Any]:
        stack = self.stack("notifier")
        p = stack.config.topic_prefix
        now = datetime.now(UTC)
        changes = [
            OrderStatusChanged(
                order_id=f"ord_{self.run}_{i}",
                user_id=f"u_{self.run}_{i % max(1, self.n // 5)}",
                status=OrderStatus.CREDITED,
                sequence=2,
                previous_status=OrderStatus.PAID,
                amount=600,
                currency="CNY",
                channel="alipay",
                paid_at=now,
                credited_at=now,
                changed_at=now,
            )
            for i in range(self.n)
        ]
        start = len(self.receiver.received.payloads)
        try:
            child = await self.started(stack, "notifier")

            async def delivered() -> bool:
                return len(self.receiver.received.payloads) - start >= self.n

            before, after = await self.drain(
                [child], lambda: self.produce(Topic.ORDERS_STATUS.qualified(p), _enc(changes)), delivered
            )
            return delta(before, after, self.n, "notifications")
        finally:
            await asyncio.to_thread(stack.stop)

    async def payments(self) -> dict[str, Any]:
        """Orders placed and paid through HTTP (2 requests each) by the simulator in this process; then the
        same orders' `credited` status changes consumed from orders.status (payments follows each order)."""
        stack = self.stack("payments")
        orders = max(1000, self.n // 4)
        p = stack.config.topic_prefix
        try:
            child = await self.started(stack, "payments")
            truth = Truth()
            async with httpx.AsyncClient(
                timeout=30, limits=httpx.Limits(max_connections=64), headers=stack.headers
            ) as client:
                sim = Simulator(stack.url("payments"), stack.config.psp_secret, client)
                await sim.drive(Load(orders=200, rate=1e6, duplicate_share=0, concurrency=32), truth)
                warm = len(truth.paid)
                before = await self.m.sample(child)
                await sim.drive(Load(orders=orders, rate=1e6, duplicate_share=0, concurrency=64), truth)

                async def relayed() -> bool:
                    # OrderPlaced for every order created, PaymentSucceeded for every order paid.
                    expected = len(truth.orders) + len(truth.paid)
                    return await count(self.m.reader, Topic.PAYMENTS_EVENTS.qualified(p)) >= expected

                await until(relayed)
                after = await self.m.sample(child)
            if len(truth.paid) <= warm:
                failed = f"{len(truth.errors)} failed, {truth.errors[:2]}"
                raise RuntimeError(f"no order was paid in the timed phase: {failed}")
            http = delta(before, after, len(truth.paid) - warm, "paid orders (2 HTTP requests each)")
            http["failed_requests"] = len(truth.errors)
            http["failures_sample"] = [e[:120] for e in truth.errors[:2]]
            return {"http": http, "status": await self._payments_follow(stack, child, truth)}
        finally:
            await asyncio.to_thread(stack.stop)

    async def _payments_follow(self, stack: LocalStack, child: Child, truth: Truth) -> dict[str, Any]:
        now = datetime.now(UTC)
        changes = [
            OrderStatusChanged(
                order_id=oid,
                user_id=truth.orders[oid]["user_id"],
                status=OrderStatus.CREDITED,
                sequence=2,
                previous_status=OrderStatus.PAID,
                amount=truth.orders[oid]["amount"],
                currency="CNY",
                channel=truth.orders[oid]["channel"],
                paid_at=now,
                credited_at=now,
                changed_at=now,
            )
            for oid in sorted(truth.paid)
        ]
        schema = f"{stack.config.db_schema_prefix}payments"

        async def followed() -> bool:
            conn = await asyncpg.connect(self.m.postgres.dsn)
            try:
                n = await conn.fetchval(f"SELECT count(*) FROM \"{schema}\".orders WHERE status = 'credited'")
            finally:
                await conn.close()
            return int(n) >= len(changes)

        topic = Topic.ORDERS_STATUS.qualified(stack.config.topic_prefix)
        before, after = await self.drain([child], lambda: self.produce(topic, _enc(changes)), followed)
        return delta(before, after, len(changes), "status changes applied")

    async def hotrow(self) -> dict[str, Any]:
        """Committed transactions/s when every transaction updates ONE row (the ledger's clearing account), and
        when each updates its own row; 32 connections, 5 s each, synchronous_commit on."""
        out: dict[str, Any] = {}
        conn = await asyncpg.connect(self.m.postgres.dsn)
        await conn.execute("CREATE TABLE IF NOT EXISTS probe_rows (id int PRIMARY KEY, balance bigint NOT NULL)")
        await conn.execute("INSERT INTO probe_rows SELECT g, 0 FROM generate_series(0, 63) g ON CONFLICT DO NOTHING")
        await conn.close()
        for label, row in (("one_row", lambda c: 0), ("own_row", lambda c: c)):
            pool = await asyncpg.create_pool(self.m.postgres.dsn, min_size=32, max_size=32)
            done = 0
            stop = time.monotonic() + 5

            async def client(
                c: int, pool: asyncpg.Pool = pool, row: Callable[[int], int] = row, stop: float = stop
            ) -> None:
                nonlocal done
                async with pool.acquire() as conn:
                    while time.monotonic() < stop:
                        async with conn.transaction():
                            await conn.execute("UPDATE probe_rows SET balance = balance + 1 WHERE id = $1", row(c))
                        done += 1

            await asyncio.gather(*(client(c) for c in range(32)))
            await pool.close()
            out[f"{label}_tx_per_s"] = round(done / 5)
        return out


def _enc(messages: list[Any]) -> list[tuple[str, Any]]:
    return [(m.order_id, encode(m, envelope_for(m, producer="capacity-probe"))) for m in messages]


async def _committed(bootstrap: str, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)
    finally:
        await admin.close()


async def main(stages: list[str], orders: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="credited-capacity-"))
    script = str(ROOT / "scripts" / "apache-kafka")
    kafka_dir = work / "kafka"
    ports = ["--port", str(free_port()), "--controller-port", str(free_port())]
    out = await asyncio.to_thread(
        subprocess.run, [script, "start", "--dir", str(kafka_dir), *ports], check=True, capture_output=True, text=True
    )
    # Every stage fills tables that start empty; like the benchmarks' PostgreSQL, autovacuum looks every second,
    # so the statements' cached plans are made again from statistics of the tables as they are, not as they were
    # at the stage's first statements (a plan made on an empty notifications table scans all of it per batch).
    postgres = EmbeddedPostgres(work / "pg", free_port(), work, settings=FRESH_STATISTICS)
    receiver = WebhookReceiver(free_port(), "probe-secret")
    try:
        await asyncio.to_thread(postgres.start)
        await receiver.start()
        bootstrap = out.stdout.strip().splitlines()[-1]
        reader = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await reader.start()
        machine = Machine(bootstrap, int((kafka_dir / "kafka.pid").read_text()), postgres, reader)
        probe = Probe(machine, work / "runs", orders, receiver)
        results: dict[str, Any] = {"cpus": os.cpu_count(), "orders": orders}
        for n, stage in enumerate(stages, 1):
            name = stage if stages.count(stage) == 1 else f"{stage} ({n})"
            results[name] = await getattr(probe, stage)()
            print(json.dumps({name: results[name]}), flush=True)  # noqa: T201
        produced = sum(n for n, _ in probe.fills)
        results["batched_produce"] = {
            "records": produced,
            "broker_cpu_s": round(sum(c for _, c in probe.fills), 2),
            "records_per_broker_cpu_s": round(produced / max(0.01, sum(c for _, c in probe.fills))),
        }
        print(json.dumps(results, indent=1))  # noqa: T201
        await reader.stop()
    finally:
        await receiver.stop()
        await asyncio.to_thread(postgres.stop)
        await asyncio.to_thread(subprocess.run, [script, "stop", "--dir", str(kafka_dir)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20000)
    parser.add_argument("--stages", default="ledger,reconciler,notifier,payments,hotrow")
    args = parser.parse_args()
    asyncio.run(main(args.stages.split(","), args.orders))
