"""Side by side on the same event log: our reconciler (a faust worker), the Bytewax peer and the periodic
SQL baseline.

The log is seeded (bench.reconciler.event_log): a known set of orders never gets a credit, so every
flag is scored against it. Two phases, each on its own topics:
- catch-up: the whole log, with every deadline long past, is on the broker before a processor starts;
  each reads all of it (events/s) and flags what it finds (precision, recall);
- live: the three run together while the log is published in real time (event time = wall time); the
  detection delay of each flag is its wall time minus the order's deadline.
"""

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.base import Message
from contracts.events import CreditPosted, PaymentSucceeded
from contracts.topics import Topic
from credited.bench import peer_sql
from credited.bench.profiling import Recording
from credited.bench.reconciler import (
    counters,
    event_log,
    produce,
    record_of,
    throughput,
    time_worker,
    worker,
)
from credited.simulator.run import partition_count, percentile
from credited.stack.processes import Child
from servicekit.kafka import KafkaPublisher, ensure_topics


@dataclass(frozen=True)
class PeerOptions:
    catch_up_orders: int = 10_000
    live_rate: float = 100.0
    live_s: float = 10.0
    threshold_s: float = 2.0
    poll_s: float = 1.0
    seed: int = 11


@dataclass(frozen=True)
class Where:
    bootstrap: str
    broker: str
    database_url: str
    run_dir: Path


def _at(message: Message) -> float:
    if isinstance(message, PaymentSucceeded):
        return message.paid_at.timestamp()
    assert isinstance(message, CreditPosted)
    return message.credited_at.timestamp()


def log_truth(log: list[Message], threshold_s: float) -> tuple[set[str], dict[str, float]]:
    """The orders the log never credits, and every paid order's deadline (unix seconds)."""
    deadlines = {m.order_id: _at(m) + threshold_s for m in log if isinstance(m, PaymentSucceeded)}
    credited = {m.order_id for m in log if isinstance(m, CreditPosted)}
    return set(deadlines) - credited, deadlines


def score_flags(flags: dict[str, float], dropped: set[str], deadlines: dict[str, float]) -> dict[str, Any]:
    """Precision and recall against the log's dropped credits; delay of the right flags past the deadline."""
    mine = {oid: at for oid, at in flags.items() if oid in deadlines}
    hits = [oid for oid in mine if oid in dropped]
    delays = [mine[oid] - deadlines[oid] for oid in hits]
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    return {
        "flagged": len(mine),
        "dropped": len(dropped),
        "precision": round(len(hits) / len(mine), 4) if mine else None,
        "recall": round(len(hits) / len(dropped), 4) if dropped else None,
        "detection_p50_s": None if p50 is None else round(p50, 3),
        "detection_p99_s": None if p99 is None else round(p99, 3),
    }


async def reconciler_flags(bootstrap: str, prefix: str) -> dict[str, float]:
    """When the reconciler told each order's user "delayed": the broker time of that status change."""
    topic = Topic.ORDERS_STATUS.qualified(prefix)
    partitions = [TopicPartition(topic, p) for p in range(await partition_count(bootstrap, topic))]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    flags: dict[str, float] = {}
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    if r.value is not None and orjson.loads(r.value).get("status") == "delayed":
                        flags.setdefault(orjson.loads(r.value)["order_id"], r.timestamp / 1000)
    finally:
        await consumer.stop()
    return flags


def bytewax(where: Where, prefix: str, threshold_s: float, *, tail: bool) -> tuple[Child, Path]:
    out = where.run_dir / f"bytewax-{prefix.strip('.')}.jsonl"
    argv = [sys.executable, "-m", "credited.bench.peer_bytewax", "--bootstrap", where.bootstrap]
    argv += ["--prefix", prefix, "--threshold", str(threshold_s), "--out", str(out)]
    child = Child("bytewax", [*argv, *([] if tail else ["--no-tail"])], log_path=out.with_suffix(".log"))
    child.start()
    return child, out


def read_bytewax(out: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """The flags it wrote and its closing line (events read, first and last event's wall time)."""
    flags: dict[str, float] = {}
    summary: dict[str, Any] = {}
    if not out.exists():
        return flags, summary
    for line in out.read_bytes().splitlines():
        row = orjson.loads(line)
        if "order_id" in row:
            flags.setdefault(row["order_id"], row["flagged_at"])
        else:
            summary.update(row)
    return flags, summary


async def _catch_up_reconciler(where: Where, prefix: str, options: PeerOptions, events: int) -> dict[str, Any]:
    """A fresh worker reads the whole log: events/s from its first event to its last, profiled meanwhile."""
    ours, port = worker(where.bootstrap, where.broker, prefix, where.run_dir, options.threshold_s)
    profile = Recording(ours.pid, where.run_dir / "reconciler-catch-up.pyspy.txt")
    try:
        await _applying(port)
        await profile.start()  # from the first event on: startup and recovery are not the hot path
        samples = await time_worker(port, events)
    finally:
        hot = await profile.stop()
        ours.stop()
    return {**throughput(samples, events), "profile": hot}


async def _catch_up_bytewax(where: Where, prefix: str, options: PeerOptions) -> tuple[dict[str, Any], dict[str, float]]:
    peer, out = bytewax(where, prefix, options.threshold_s, tail=False)
    try:
        await asyncio.to_thread(_wait_exit, peer, 600)
    finally:
        peer.stop()
    flags, summary = await asyncio.to_thread(read_bytewax, out)
    seconds = summary.get("last_at", 0.0) - summary.get("first_at", 0.0)
    figures = {
        "events": summary.get("events"),
        "seconds": round(seconds, 2),
        "events_per_s": round(summary["events"] / seconds) if seconds > 0 else None,
    }
    return figures, flags


async def catch_up(where: Where, options: PeerOptions) -> dict[str, Any]:
    start = datetime.now(UTC) - timedelta(hours=1)
    log = event_log(options.catch_up_orders, seed=options.seed, t0=start, tag="cu")
    dropped, deadlines = log_truth(log, options.threshold_s)
    prefix = f"peers{uuid.uuid4().hex[:8]}."
    await produce(where.bootstrap, where.broker, prefix, log)
    reconciler = await _catch_up_reconciler(where, prefix, options, len(log))
    hot = reconciler.pop("profile")
    reconciler |= score_flags(await reconciler_flags(where.bootstrap, prefix), dropped, deadlines)
    peer, peer_flags = await _catch_up_bytewax(where, prefix, options)
    sql = await peer_sql.catch_up(where.bootstrap, prefix, where.database_url, options.threshold_s, len(log))
    sql_flags = sql.pop("flags")
    return {
        "events": len(log),
        "orders": options.catch_up_orders,
        "reconciler_profile": hot,
        "reconciler": reconciler,
        "bytewax": peer | score_flags(peer_flags, dropped, deadlines),
        "sql": sql | score_flags(sql_flags, dropped, deadlines),
    }


async def _applying(port: int, timeout_s: float = 120) -> None:
    """Until the worker has applied its first event."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            now = await counters(client, port)
            if now is not None and now["events"] > 0:
                return
            await asyncio.sleep(0.1)


def _started(out: Path) -> bool:
    return out.exists() and b'"ready"' in out.read_bytes()


def _wait_exit(child: Child, timeout_s: float) -> None:
    assert child.proc is not None
    child.proc.wait(timeout_s)


async def _ready(port: int, out: Path, sql: peer_sql.LiveSql, timeout_s: float = 90) -> None:
    """Until all three have read the warm-up order: startup is not part of any detection delay."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            ours = await counters(client, port)
            theirs = await asyncio.to_thread(_started, out)
            if ours and ours["events"] >= 2 and theirs and sql.progress.events >= 2:
                return
            await asyncio.sleep(0.2)
    raise TimeoutError("the processors did not read the warm-up order")


async def _paced(publisher: KafkaPublisher, prefix: str, log: list[Message]) -> None:
    """Publish each event at its event time (in log order), without waiting for acknowledgements."""
    sends = []
    for message in log:
        delay = _at(message) - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sends.append(asyncio.create_task(publisher.publish(*record_of(message, prefix))))
    await asyncio.gather(*sends)


async def _live_log(publisher: KafkaPublisher, prefix: str, options: PeerOptions) -> list[Message]:
    """The seeded log, its payments from half a second from now at the live rate, published in real time."""
    log = event_log(
        round(options.live_rate * options.live_s),
        seed=options.seed,
        t0=datetime.now(UTC) + timedelta(seconds=0.5),
        spacing_s=1 / options.live_rate,
        tag="live",
    )
    await _paced(publisher, prefix, log)
    return log


async def live(where: Where, options: PeerOptions) -> dict[str, Any]:
    prefix = f"peers{uuid.uuid4().hex[:8]}."
    await ensure_topics(where.bootstrap, [t.qualified(prefix) for t in Topic], 6)
    ours, port = worker(where.bootstrap, where.broker, prefix, where.run_dir, options.threshold_s)
    peer, out = bytewax(where, prefix, options.threshold_s, tail=True)
    sql = peer_sql.LiveSql(where.bootstrap, prefix, where.database_url, options.threshold_s, options.poll_s)
    idempotence = where.broker == "apache"
    publisher = KafkaPublisher(where.bootstrap, idempotence=idempotence, client_id="bench-live", topic_prefix=prefix)
    await publisher.start()
    await sql.start()
    try:
        warmup = event_log(1, loss=0.0, dup=0.0, t0=datetime.now(UTC), tag="warmup")
        await publisher.publish_many([record_of(m, prefix) for m in warmup])
        await _ready(port, out, sql)
        log = await _live_log(publisher, prefix, options)
        dropped, deadlines = log_truth(log, options.threshold_s)
        await asyncio.sleep(max(deadlines.values()) + 3 - time.time())  # every deadline passed, and a margin
    finally:
        await publisher.stop()
        await sql.stop()
        peer.stop()
        ours.stop()
    queries = sorted(sql.query_times)
    return {
        "orders": len(deadlines),
        "rate_per_s": options.live_rate,
        "threshold_s": options.threshold_s,
        "poll_s": options.poll_s,
        "reconciler": score_flags(await reconciler_flags(where.bootstrap, prefix), dropped, deadlines),
        "bytewax": score_flags((await asyncio.to_thread(read_bytewax, out))[0], dropped, deadlines),
        "sql": score_flags(sql.progress.flags, dropped, deadlines)
        | {"query_p50_s": round(queries[len(queries) // 2], 4) if queries else None},
    }


async def side_by_side(where: Where, options: PeerOptions) -> dict[str, Any]:
    figures = {"catch_up": await catch_up(where, options), "live": await live(where, options)}
    ours_rate = figures["catch_up"]["reconciler"].get("events_per_s")
    ours_p99 = figures["live"]["reconciler"]["detection_p99_s"]
    figures["ratios"] = {
        name: {
            "events_per_s_vs_reconciler": _ratio(figures["catch_up"][name].get("events_per_s"), ours_rate),
            "detection_p99_vs_reconciler": _ratio(figures["live"][name]["detection_p99_s"], ours_p99),
        }
        for name in ("bytewax", "sql")
    }
    return figures


def _ratio(value: float | None, base: float | None) -> float | None:
    """value / base to three significant figures (a ratio far below one keeps its digits)."""
    return float(f"{value / base:.3g}") if value is not None and base else None
