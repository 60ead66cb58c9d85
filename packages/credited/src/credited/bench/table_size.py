"""What a big order-state table costs a reconciler worker: its memory, and the time to take its partitions
over (restore the table from the changelog until the worker is ready), for a table of N settled orders.

Each variant writes N changelog records straight to a fresh changelog topic, as a worker would have left
them, then starts one worker on it and measures from its start to its first ready answer (/healthz), and
its resident memory then (and, when the orders are past the retention, again once it has dropped them):
- before: the states as the reconciler wrote them before issue 14 (a JSON object per order, kept decoded
  as a dict), restored by that reconciler's own code (`--before-src`: its services/reconciler/src);
- after, kept: the states as they are written now (the same JSON, restored as OrderState objects), settled
  within the retention, so the worker keeps them all;
- after, expired: the same, settled longer ago than the retention: the worker drops them once the safe
  time of their partition is known, with a tombstone each.

    python -m credited.bench.table_size --orders 1000000 --out FILE [--before-src DIR]
    (KAFKA_BOOTSTRAP and KAFKA_BROKER name the broker)
"""

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from contracts.events import OrderStatus
from contracts.topics import Topic
from credited.stack.processes import Child, free_port
from reconciler.adapters.table import encode_state
from reconciler.domain import OrderState, Phase
from servicekit.kafka import ensure_topics

PARTITIONS = 6
_partitioner = DefaultPartitioner()


def settled_state(i: int, settled_at: datetime) -> OrderState:
    """A credited order as the reconciler keeps it: paid, credited, and the user told."""
    paid_at = settled_at - timedelta(seconds=1)
    state = OrderState(f"ord_{i:09d}", i % PARTITIONS, f"u{i % 100_000}", 600, "CNY", "card", None, Phase.CREDITED)
    state.paid_at, state.credited_at, state.deadline = paid_at, settled_at, paid_at + timedelta(minutes=2)
    state.settled_at, state.status, state.sequence = settled_at, OrderStatus.CREDITED, 1
    state.history = (("paid", paid_at), ("credited", settled_at), ("status:credited", settled_at))
    return state


def before_format(state: OrderState) -> bytes:
    """The JSON the reconciler wrote before issue 14: no settled_at, the history's times as strings."""
    data = orjson.loads(encode_state(state))
    data.pop("settled_at")
    return orjson.dumps(data)


async def write_changelog(bootstrap: str, topic: str, orders: int, settled_at: datetime, before: bool) -> int:
    """N changelog records on `topic`, each in its order's partition; returns the bytes written."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"cleanup.policy": "compact"}
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs=config)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    size = 0
    partitions = list(range(PARTITIONS))
    try:
        for start in range(0, orders, 20_000):
            sent = []
            for i in range(start, min(orders, start + 20_000)):
                state = settled_state(i, settled_at)
                value = before_format(state) if before else encode_state(state)
                size += len(value)
                partition = _partitioner(state.order_id.encode(), partitions, partitions)
                key = orjson.dumps(state.order_id)
                sent.append(await producer.send(topic, value, key=key, partition=partition))
            await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return size


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def take_over(
    bootstrap: str, broker: str, prefix: str, run_dir: Path, src: Path | None, retention_s: float, expected: int
) -> dict[str, Any]:
    """Start a worker on `prefix`; time it to ready; its memory then, and once it dropped `expected` orders."""
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": bootstrap,
        "KAFKA_BROKER": broker,
        "CREDITED_TOPIC_PREFIX": prefix,
        "CREDITED_TOPIC_PARTITIONS": str(PARTITIONS),
        "CREDITED_LOG_LEVEL": "WARNING",
        "RECONCILER_HTTP_PORT": str(port),
        "RECONCILER_DATA_DIR": str(run_dir / prefix.strip(".")),
        "RECONCILER_RETENTION_S": str(retention_s),
    }
    if src is not None:
        env["PYTHONPATH"] = f"{src}:{env.get('PYTHONPATH', '')}"
    child = Child("reconciler", [sys.executable, "-m", "reconciler"], log_path=run_dir / f"{prefix}log", env=env)
    started = time.monotonic()
    child.start()
    figures: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            while "ready_s" not in figures and time.monotonic() - started < 1800 and child.alive():
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        figures["ready_s"] = round(time.monotonic() - started, 1)
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
            figures["rss_mib_ready"] = rss_mib(child.pid)
            while expected and time.monotonic() - started < 1800:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                dropped = sum(
                    float(s.split()[-1]) for s in text.splitlines() if s.startswith("reconciler_orders_expired_total ")
                )
                if dropped >= expected:
                    figures["dropped_after_s"] = round(time.monotonic() - started, 1)
                    figures["rss_mib_after_dropping"] = rss_mib(child.pid)
                    break
                await asyncio.sleep(1)
    finally:
        child.stop()
    if "ready_s" not in figures:
        figures["error"] = child.tail()
    return figures


async def variant(args: argparse.Namespace, name: str, before: bool, settled_ago: timedelta) -> dict[str, Any]:
    prefix = f"size{uuid.uuid4().hex[:8]}."
    bootstrap, broker = os.environ["KAFKA_BOOTSTRAP"], os.environ.get("KAFKA_BROKER", "apache")
    await ensure_topics(bootstrap, [t.qualified(prefix) for t in Topic], PARTITIONS)
    changelog = f"{prefix}credited-reconciler-order-state-changelog"
    written = await write_changelog(bootstrap, changelog, args.orders, datetime.now(UTC) - settled_ago, before)
    src = args.before_src if before else None
    expired = settled_ago.total_seconds() > args.retention_s
    load = os.getloadavg()[0]
    figures = await take_over(
        bootstrap, broker, prefix, args.out.parent, src, args.retention_s, args.orders if expired else 0
    )
    return {"variant": name, "orders": args.orders, "changelog_mib": round(written / 2**20, 1), "load": load} | figures


async def run(args: argparse.Namespace) -> dict[str, Any]:
    week = timedelta(days=7)
    report: dict[str, Any] = {"orders": args.orders, "retention_s": args.retention_s, "variants": []}
    plan = [("after, kept", False, timedelta(days=1)), ("after, expired", False, week * 2)]
    if args.before_src is not None:
        plan.insert(0, ("before", True, timedelta(days=1)))
    for name, before, ago in plan:
        report["variants"].append(await variant(args, name, before, ago))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m credited.bench.table_size", description=__doc__)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--retention-s", type=float, default=7 * 24 * 3600.0)
    parser.add_argument("--before-src", type=Path, help="services/reconciler/src of the reconciler before issue 14")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run(args))
    args.out.write_text(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.write(args.out.read_text())


if __name__ == "__main__":
    main()
