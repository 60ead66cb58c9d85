"""Side by side on the same event log: our reconciler (one worker process, and two sharing the partitions),
faust's own ceiling (a bare agent: decode and one table row per record, bench.peer_faust), the Bytewax peer
and the periodic SQL baseline.

The log is seeded (bench.reconciler.event_log): a known set of orders never gets a credit, so every
flag is scored against it. Two phases:
- catch-up: the whole log, with every deadline long past, is on the broker before a processor starts
  (each on its own copy of the log, one after the other, the machine's load noted for each); each reads
  all of it (events/s) and flags what it finds (precision, recall);
- live: the log is published in real time (event time = wall time); the detection delay of each flag is
  its wall time minus the order's deadline. `live` runs the reconciler, Bytewax and SQL together;
  `live_reconciler` runs the reconciler's workers alone at a high rate.
"""

import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from contracts.base import Message
from contracts.events import CreditPosted, PaymentSucceeded
from contracts.topics import Topic
from credited.stack.processes import Child
from harness.bench import peer_sql
from harness.bench.profiling import Recording
from harness.bench.reconciler import (
    counters,
    event_log,
    produce,
    record_of,
    throughput,
    time_workers,
    workers,
)
from harness.simulator.run import credit_publication_times, partition_count, percentile
from servicekit.kafka import KafkaPublisher, ensure_topics


@dataclass(frozen=True)
class PeerOptions:
    catch_up_orders: int = 10_000
    live_rate: float = 100.0
    live_s: float = 10.0
    threshold_s: float = 2.0
    poll_s: float = 1.0
    seed: int = 11
    workers: int = 2


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
    argv = [sys.executable, "-m", "harness.bench.peer_bytewax", "--bootstrap", where.bootstrap]
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


async def _catch_up_reconciler(
    where: Where, prefix: str, options: PeerOptions, events: int, count: int = 1, *, profile: bool = False
) -> dict[str, Any]:
    """`count` fresh workers read the whole log: events/s from the first event to the last (the first worker
    profiled meanwhile, if asked)."""
    started = workers(where.bootstrap, where.broker, prefix, where.run_dir, options.threshold_s, count)
    ports = [port for _, port in started]
    recording = Recording(started[0][0].pid, where.run_dir / "reconciler-catch-up.pyspy.txt") if profile else None
    load = os.getloadavg()[0]
    try:
        await _applying(ports[0])
        if recording is not None:
            await recording.start()  # from the first event on: startup and recovery are not the hot path
        samples = await time_workers(ports, events)
    finally:
        hot = await recording.stop() if recording is not None else {}
        for child, _ in started:
            child.stop()
    return {**throughput(samples, events), "workers": count, "load_average": round(load, 2), "profile": hot}


async def _catch_up_faust(where: Where, prefix: str, events: int) -> dict[str, Any]:
    """faust's ceiling: the bare agent (bench.peer_faust) reads the whole log."""
    out = where.run_dir / f"faust-{prefix.strip('.')}.jsonl"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": where.bootstrap,
        "KAFKA_BROKER": where.broker,
        "CREDITED_TOPIC_PREFIX": prefix,
        "RECONCILER_DATA_DIR": str(where.run_dir / f"faust-{prefix.strip('.')}"),
    }
    argv = [sys.executable, "-m", "harness.bench.peer_faust", "--events", str(events), "--out", str(out)]
    child = Child("faust-ceiling", argv, log_path=out.with_suffix(".log"), env=env)
    load = os.getloadavg()[0]
    child.start()
    try:
        await asyncio.to_thread(_wait_exit, child, 600)
    finally:
        child.stop()
    summary: dict[str, Any] = {}
    if out.exists():
        for line in out.read_bytes().splitlines():
            summary.update(orjson.loads(line))
    seconds = summary.get("last_at", 0.0) - summary.get("first_at", 0.0)
    return {
        "events": summary.get("events"),
        "seconds": round(seconds, 2),
        "events_per_s": round(summary["events"] / seconds) if seconds > 0 else None,
        "load_average": round(load, 2),
    }


async def _catch_up_bytewax(where: Where, prefix: str, options: PeerOptions) -> tuple[dict[str, Any], dict[str, float]]:
    peer, out = bytewax(where, prefix, options.threshold_s, tail=False)
    load = os.getloadavg()[0]
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
        "load_average": round(load, 2),
    }
    return figures, flags


async def _fresh_copy(where: Where, log: list[Message]) -> str:
    """The log on topics of its own: each processor reads its own copy, from the start."""
    prefix = f"peers{uuid.uuid4().hex[:8]}."
    await produce(where.bootstrap, where.broker, prefix, log)
    return prefix


def _catch_up_log(options: PeerOptions) -> list[Message]:
    start = datetime.now(UTC) - timedelta(hours=1)
    return event_log(options.catch_up_orders, seed=options.seed, t0=start, tag="cu")


async def catch_up(where: Where, options: PeerOptions) -> dict[str, Any]:
    log = _catch_up_log(options)
    dropped, deadlines = log_truth(log, options.threshold_s)
    prefix = await _fresh_copy(where, log)
    reconciler = await _catch_up_reconciler(where, prefix, options, len(log), profile=True)
    hot = reconciler.pop("profile")
    reconciler |= score_flags(await reconciler_flags(where.bootstrap, prefix), dropped, deadlines)
    prefix = await _fresh_copy(where, log)
    two = await _catch_up_reconciler(where, prefix, options, len(log), options.workers)
    two.pop("profile")
    two |= score_flags(await reconciler_flags(where.bootstrap, prefix), dropped, deadlines)
    ceiling = await _catch_up_faust(where, await _fresh_copy(where, log), len(log))
    peer, peer_flags = await _catch_up_bytewax(where, prefix, options)
    sql = await peer_sql.catch_up(where.bootstrap, prefix, where.database_url, options.threshold_s, len(log))
    sql_flags = sql.pop("flags")
    return {
        "events": len(log),
        "orders": options.catch_up_orders,
        "reconciler_profile": hot,
        "reconciler": reconciler,
        "reconciler_two_workers": two,
        "faust_ceiling": ceiling,
        "reconciler_share_of_faust_ceiling": _ratio(reconciler.get("events_per_s"), ceiling.get("events_per_s")),
        "bytewax": peer | score_flags(peer_flags, dropped, deadlines),
        "sql": sql | score_flags(sql_flags, dropped, deadlines),
    }


async def throughput_side_by_side(where: Where, options: PeerOptions, rounds: int = 2) -> dict[str, Any]:
    """Catch-up events/s only, for `credited bench-reconciler`: faust's ceiling, the reconciler with one and
    with `options.workers` processes, and Bytewax, each on its own copy of the log, taking turns `rounds`
    times so that a change in the machine's load hits them alike; medians reported, every run kept."""
    log = _catch_up_log(options)
    dropped, deadlines = log_truth(log, options.threshold_s)
    runs: dict[str, list[dict[str, Any]]] = {
        "faust_ceiling": [],
        "reconciler": [],
        "reconciler_workers": [],
        "bytewax": [],
    }
    for _ in range(rounds):
        runs["faust_ceiling"].append(await _catch_up_faust(where, await _fresh_copy(where, log), len(log)))
        for key, count in (("reconciler", 1), ("reconciler_workers", options.workers)):
            prefix = await _fresh_copy(where, log)
            figures = await _catch_up_reconciler(where, prefix, options, len(log), count, profile=key == "reconciler")
            figures |= score_flags(await reconciler_flags(where.bootstrap, prefix), dropped, deadlines)
            runs[key].append(figures)
        runs["bytewax"].append((await _catch_up_bytewax(where, await _fresh_copy(where, log), options))[0])
    median = {key: _median([r.get("events_per_s") for r in found]) for key, found in runs.items()}
    steady = {key: _median([r.get("steady_events_per_s") for r in found]) for key, found in runs.items()}
    return {
        "events": len(log),
        "orders": options.catch_up_orders,
        "workers": options.workers,
        "median_events_per_s": median,
        "median_steady_events_per_s": steady,
        "reconciler_share_of_faust_ceiling": _ratio(median["reconciler"], median["faust_ceiling"]),
        "reconciler_workers_share_of_faust_ceiling": _ratio(median["reconciler_workers"], median["faust_ceiling"]),
        "runs": runs,
    }


def _median(values: list[Any]) -> float | None:
    found = [v for v in values if v is not None]
    return round(statistics.median(found)) if found else None


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


async def _events(client: httpx.AsyncClient, ports: list[int]) -> float | None:
    found = [await counters(client, port) for port in ports]
    return None if any(f is None for f in found) else sum(f["events"] for f in found if f is not None)


async def _ready(ports: list[int], others: Callable[[], bool], timeout_s: float = 120) -> None:
    """Until the reconciler's workers (and the others, if any) have read the warm-up order and share every
    partition, the same for two seconds (their first rebalances done): startup is not part of any detection
    delay."""
    deadline = time.monotonic() + timeout_s
    stable_since: float | None = None
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            ours = await _events(client, ports)
            shared = [await _assigned(client, port) for port in ports]
            ready = ours is not None and ours >= 2 and sum(shared) == 6 and await asyncio.to_thread(others)
            stable_since = (stable_since or time.monotonic()) if ready else None
            if stable_since is not None and time.monotonic() - stable_since >= 2:
                return
            await asyncio.sleep(0.2)
    raise TimeoutError("the processors did not read the warm-up order")


async def _assigned(client: httpx.AsyncClient, port: int) -> float:
    try:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    except httpx.HTTPError:
        return 0.0
    found = [float(s.split()[-1]) for s in text.splitlines() if s.startswith("reconciler_assigned_partitions ")]
    return found[0] if found else 0.0


async def _paced(publisher: KafkaPublisher, prefix: str, log: list[Message]) -> None:
    """Publish each event at its event time (in log order): every 5 ms what is due goes out in one batch,
    without waiting for the acknowledgements of the batches before."""
    sends: list[asyncio.Task[None]] = []
    i = 0
    while i < len(log):
        now = time.time()
        due = i
        while due < len(log) and _at(log[due]) <= now:
            due += 1
        if due > i:
            batch = [record_of(m, prefix) for m in log[i:due]]
            sends.append(asyncio.create_task(publisher.publish_many(batch)))
            i = due
        await asyncio.sleep(0.005)
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


def _publisher(where: Where, prefix: str) -> KafkaPublisher:
    idempotence = where.broker == "apache"
    return KafkaPublisher(where.bootstrap, idempotence=idempotence, client_id="bench-live", topic_prefix=prefix)


async def live(where: Where, options: PeerOptions) -> dict[str, Any]:
    prefix = f"peers{uuid.uuid4().hex[:8]}."
    await ensure_topics(where.bootstrap, [t.qualified(prefix) for t in Topic], 6)
    ours = workers(where.bootstrap, where.broker, prefix, where.run_dir, options.threshold_s, options.workers)
    peer, out = bytewax(where, prefix, options.threshold_s, tail=True)
    sql = peer_sql.LiveSql(where.bootstrap, prefix, where.database_url, options.threshold_s, options.poll_s)
    publisher = _publisher(where, prefix)
    await publisher.start()
    await sql.start()
    try:
        warmup = event_log(1, loss=0.0, dup=0.0, t0=datetime.now(UTC), tag="warmup")
        await publisher.publish_many([record_of(m, prefix) for m in warmup])
        await _ready([port for _, port in ours], lambda: _started(out) and sql.progress.events >= 2)
        log = await _live_log(publisher, prefix, options)
        dropped, deadlines = log_truth(log, options.threshold_s)
        await asyncio.sleep(max(deadlines.values()) + 3 - time.time())  # every deadline passed, and a margin
    finally:
        await publisher.stop()
        await sql.stop()
        peer.stop()
        for child, _ in ours:
            child.stop()
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


async def live_reconciler(where: Where, options: PeerOptions) -> dict[str, Any]:
    """The reconciler's workers alone, the log published at `options.live_rate` orders/s in real time:
    how long after each deadline the order is flagged (p50, p99), and whether the workers kept up."""
    prefix = f"live{uuid.uuid4().hex[:8]}."
    await _joined_topics_on_broker_time(where.bootstrap, prefix)
    await ensure_topics(where.bootstrap, [t.qualified(prefix) for t in Topic], 6)
    ours = workers(where.bootstrap, where.broker, prefix, where.run_dir, options.threshold_s, options.workers)
    publisher = _publisher(where, prefix)
    await publisher.start()
    load = os.getloadavg()[0]
    try:
        warmup = event_log(1, loss=0.0, dup=0.0, t0=datetime.now(UTC), tag="warmup")
        await publisher.publish_many([record_of(m, prefix) for m in warmup])
        await _ready([port for _, port in ours], lambda: True)
        started = time.time()
        log = await _live_log(publisher, prefix, options)
        published_s = time.time() - started
        dropped, deadlines = log_truth(log, options.threshold_s)
        await asyncio.sleep(max(deadlines.values()) + 3 - time.time())  # every deadline passed, and a margin
        # then until the workers have applied every event (if they fell behind) and flag no more
        caught_up = await time_workers([port for _, port in ours], len(log) + 2, timeout_s=300)
        behind_s = caught_up[-1][0] - time.monotonic() + time.time() - max(deadlines.values()) if caught_up else None
    finally:
        await publisher.stop()
        for child, _ in ours:
            child.stop()
    flags = await reconciler_flags(where.bootstrap, prefix)
    visible = await credit_publication_times(where.bootstrap, Topic.LEDGER_EVENTS.qualified(prefix))
    return {
        "orders": len(deadlines),
        "events": len(log),
        "rate_per_s": options.live_rate,
        "published_in_s": round(published_s, 2),
        "workers": options.workers,
        "threshold_s": options.threshold_s,
        "load_average": round(load, 2),
        "caught_up_s_after_the_last_deadline": None if behind_s is None else round(behind_s, 1),
        "reconciler": score_flags(flags, dropped, deadlines),
        # Judged against the broker's own clock: a flag is false only if the order's credit had reached the
        # broker by its deadline (a publisher that falls behind the log's event times makes credits late).
        "false_flags": sum(1 for o in flags if visible.get(o, float("inf")) <= deadlines.get(o, 0.0)),
        "credits_late_on_the_broker": sum(1 for o, at in visible.items() if o in deadlines and at > deadlines[o]),
    }


async def _joined_topics_on_broker_time(bootstrap: str, prefix: str) -> None:
    """payments.events and ledger.events stamped with the broker's clock (LogAppendTime), so that when a
    credit reached the broker is known exactly."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"message.timestamp.type": "LogAppendTime"}
        names = [Topic.PAYMENTS_EVENTS.qualified(prefix), Topic.LEDGER_EVENTS.qualified(prefix)]
        await admin.create_topics([NewTopic(name, 6, 1, topic_configs=config) for name in names])
    finally:
        await admin.close()


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
