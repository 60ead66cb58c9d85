"""What a big order-state table costs a reconciler worker: its memory, and the time to take its partitions
over (restore the table from the changelog until the worker is ready), for a table of N settled orders.

Each variant writes N changelog records straight to a fresh changelog topic, as a worker would have left
them, then starts one worker on it and measures from its start until it has taken every partition over with
its table restored, and its resident memory then:
- before: the states as the reconciler wrote them before issue 14 (a JSON object per order, kept decoded
  as a dict), restored by that reconciler's own code (`--before-src`: its services/reconciler/src);
- after, kept: the states as they are written now (the same JSON, restored as OrderState objects), settled
  within the retention, so the worker keeps them all;
- after, expired: the same, settled longer ago than the retention: the first worker restores them and drops
  them once the safe time of their partitions is known, with a tombstone each; then a second worker takes
  the partitions over (it reads the records and their tombstones, until Kafka's cleaner has compacted them).

    python -m harness.bench.table_size --orders 1000000 --out FILE [--before-src DIR]
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

from contracts.topics import Topic
from credited.stack.processes import Child, free_port
from reconciler.bench import settled_changelog_value
from servicekit.kafka import ensure_topics
from servicekit.settings import default_metrics_port

PARTITIONS = 6
_partitioner = DefaultPartitioner()


def order_id_of(i: int) -> str:
    return f"ord_{i:09d}"


def settled_value(i: int, settled_at: datetime) -> bytes:
    """The changelog value of a credited order as the reconciler keeps it: paid, credited, and the user told."""
    return settled_changelog_value(order_id_of(i), i % PARTITIONS, f"u{i % 100_000}", settled_at)


def before_format(value: bytes) -> bytes:
    """The JSON the reconciler wrote before issue 14: no settled_at, the history's times as strings."""
    data = orjson.loads(value)
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
                order_id, value = order_id_of(i), settled_value(i, settled_at)
                value = before_format(value) if before else value
                size += len(value)
                partition = _partitioner(order_id.encode(), partitions, partitions)
                key = orjson.dumps(order_id)
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


async def _gauge(client: httpx.AsyncClient, port: int, name: str) -> float | None:
    try:
        text = (await client.get(f"http://127.0.0.1:{default_metrics_port(port)}/metrics")).text
    except httpx.HTTPError:
        return None
    found = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"{name} ")]
    return found[0] if found else None


async def _answers(client: httpx.AsyncClient, port: int, order_id: str) -> bool:
    try:
        return (await client.get(f"http://127.0.0.1:{port}/v1/orders/{order_id}/timeline")).status_code == 200
    except httpx.HTTPError:
        return False


async def _restored(client: httpx.AsyncClient, port: int, before: bool, probes: list[str], expected: int) -> bool:
    """The worker has every partition and its table: the last order written to each partition answers (the
    code before issue 14 has no gauge for it), or the worker reports all partitions taken over and its table
    at the size expected."""
    if before:
        return all([await _answers(client, port, order_id) for order_id in probes])
    partitions = await _gauge(client, port, "reconciler_assigned_partitions")
    orders = await _gauge(client, port, "reconciler_table_orders")
    return partitions == PARTITIONS and orders == expected


async def take_over(
    bootstrap: str,
    broker: str,
    prefix: str,
    run_dir: Path,
    src: Path | None,
    retention_s: float,
    probes: list[str],
    expected: int,
) -> dict[str, Any]:
    """Start a worker on `prefix` and time it until it has taken every partition over with its table (of
    `expected` orders); its memory then."""
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": bootstrap,
        "KAFKA_BROKER": broker,
        "CREDITED_TOPIC_PREFIX": prefix,
        "CREDITED_TOPIC_PARTITIONS": str(PARTITIONS),
        "CREDITED_LOG_LEVEL": "WARNING",
        "RECONCILER_HTTP_PORT": str(port),
        "RECONCILER_DATA_DIR": str(run_dir / f"{prefix}{uuid.uuid4().hex[:4]}"),
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
            while time.monotonic() - started < 1800 and child.alive():
                if await _restored(client, port, src is not None, probes, expected):
                    figures["taken_over_s"] = round(time.monotonic() - started, 1)
                    figures["rss_mib"] = rss_mib(child.pid)
                    break
                await asyncio.sleep(0.5)
    finally:
        child.stop()
    if "taken_over_s" not in figures:
        figures["error"] = child.tail()
    return figures


async def variant(args: argparse.Namespace, name: str, before: bool, settled_ago: timedelta) -> dict[str, Any]:
    """One table on its own topics: the first worker's take-over (and, when the orders are past the retention,
    a second worker's after the first dropped them, their tombstones not yet compacted away)."""
    prefix = f"size{uuid.uuid4().hex[:8]}."
    bootstrap, broker = os.environ["KAFKA_BOOTSTRAP"], os.environ.get("KAFKA_BROKER", "apache")
    await ensure_topics(bootstrap, [t.qualified(prefix) for t in Topic], PARTITIONS)
    changelog = f"{prefix}credited-reconciler-order-state-changelog"
    written = await write_changelog(bootstrap, changelog, args.orders, datetime.now(UTC) - settled_ago, before)
    src = args.before_src if before else None
    expired = settled_ago.total_seconds() > args.retention_s
    probes = _last_in_each_partition(args.orders)
    figures: dict[str, Any] = {"variant": name, "orders": args.orders, "changelog_mib": round(written / 2**20, 1)}
    figures["load"] = round(os.getloadavg()[0], 2)
    run = (bootstrap, broker, prefix, args.out.parent, src, args.retention_s, probes)
    figures["first"] = await take_over(*run, 0 if expired else args.orders)
    if expired:
        figures["next"] = await take_over(*run, 0)
    return figures


def _last_in_each_partition(orders: int) -> list[str]:
    last: dict[int, str] = {}
    partitions = list(range(PARTITIONS))
    for i in range(orders):
        order_id = order_id_of(i)
        last[_partitioner(order_id.encode(), partitions, partitions)] = order_id
    return list(last.values())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    week = timedelta(days=7)
    report: dict[str, Any] = {"orders": args.orders, "retention_s": args.retention_s, "variants": []}
    plan = [("after, kept", False, timedelta(days=1)), ("after, expired", False, week * 2)]
    if args.before_src is not None:
        plan.insert(0, ("before", True, timedelta(days=1)))
    for name, before, ago in plan:
        if args.only and name not in args.only:
            continue
        report["variants"].append(await variant(args, name, before, ago))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.table_size", description=__doc__)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--retention-s", type=float, default=7 * 24 * 3600.0)
    parser.add_argument("--before-src", type=Path, help="services/reconciler/src of the reconciler before issue 14")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--only", action="append", help="run only this variant (repeatable): before, 'after, kept', ..."
    )
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run(args))
    args.out.write_text(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.write(args.out.read_text())


if __name__ == "__main__":
    main()
