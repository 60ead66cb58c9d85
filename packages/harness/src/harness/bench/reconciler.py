"""Reconciler throughput on a replayed event log: the pure engine alone, and the faust worker on a broker.

The log: N paid orders (payment, then a credit for all but `loss` of them), `dup` of all events sent
twice, events of different orders interleaved, a credit before its payment for some.
"""

import asyncio
import itertools
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from contracts.base import Message
from contracts.codec import Record, encode, envelope_for
from contracts.events import CreditPosted, PaymentSucceeded
from contracts.topics import Topic
from credited.stack.processes import Child, free_port
from reconciler.bench import engine_throughput
from servicekit.kafka import KafkaPublisher, ensure_topics

T0 = datetime(2026, 11, 22, tzinfo=UTC)


def event_log(
    orders: int,
    loss: float = 0.05,
    dup: float = 0.1,
    seed: int = 7,
    *,
    t0: datetime = T0,
    spacing_s: float = 0.001,
    tag: str = "ord",
) -> list[Message]:
    """The same seed gives the same log; `t0` and `spacing_s` place the payments in time."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible event log, not crypto
    log: list[Message] = []
    for i in range(orders):
        oid = f"{tag}_{i:08d}"
        paid_at = t0 + timedelta(seconds=i * spacing_s)
        pay = PaymentSucceeded(
            order_id=oid,
            user_id=f"u{i % 1000}",
            amount=600,
            currency="CNY",
            channel="card",
            provider="sim",
            provider_txn_id=f"tx{i}",
            paid_at=paid_at,
        )
        events: list[Message] = [pay]
        if rng.random() >= loss:
            credit = CreditPosted(
                order_id=oid,
                user_id=pay.user_id,
                amount=600,
                currency="CNY",
                transaction_id=f"t{i}",
                credited_at=paid_at + timedelta(milliseconds=40),
            )
            events.insert(0 if rng.random() < 0.02 else 1, credit)
        events += [e for e in events if rng.random() < dup]
        log += events
    # interleave neighbouring orders the way partitions and consumers do
    for i in range(0, len(log) - 8, 8):
        window = log[i : i + 8]
        rng.shuffle(window)
        log[i : i + 8] = window
    return log


def bench_engine(orders: int) -> dict[str, Any]:
    """The engine alone (reconciler.bench) on the seeded log: every payment at T0, one tick an hour later."""
    return engine_throughput(event_log(orders), threshold_s=120, now=T0, tick_at=T0 + timedelta(hours=1))


async def produce(bootstrap: str, broker: str, prefix: str, log: list[Message]) -> None:
    """Publish the log to payments.events and ledger.events under `prefix`, in batches, as fast as possible."""
    await ensure_topics(bootstrap, [t.qualified(prefix) for t in Topic], 6)
    publisher = KafkaPublisher(bootstrap, idempotence=broker == "apache", client_id="bench", topic_prefix=prefix)
    await publisher.start()
    try:
        for i in range(0, len(log), 2000):
            await publisher.publish_many([record_of(message, prefix) for message in log[i : i + 2000]])
    finally:
        await publisher.stop()


def record_of(message: Message, prefix: str) -> tuple[str, Record]:
    topic = Topic.PAYMENTS_EVENTS if isinstance(message, PaymentSucceeded) else Topic.LEDGER_EVENTS
    return topic.qualified(prefix), encode(message, envelope_for(message, producer="bench"))


def worker(
    bootstrap: str, broker: str, prefix: str, run_dir: Path, threshold_s: float, instance: int = 1
) -> tuple[Child, int]:
    """A reconciler worker process on `prefix` (instance n of its group); returns it and its /metrics port (a free
    one of its own: the default, the HTTP port + 1000, is a port nobody reserved), where the bench reads it."""
    metrics_port = free_port()
    name = f"reconciler-{prefix.strip('.')}-{instance}"
    env = {
        **os.environ,
        # A bench on a laptop: its pages' key store (DATABASE_URL) is the development default, never read here.
        "CREDITED_ENV": "development",
        "KAFKA_BOOTSTRAP": bootstrap,
        "KAFKA_BROKER": broker,
        "CREDITED_TOPIC_PREFIX": prefix,
        "RECONCILER_HTTP_PORT": str(free_port()),
        "RECONCILER_METRICS_PORT": str(metrics_port),
        "RECONCILER_DATA_DIR": str(run_dir / name),
        "CREDITED_LOG_LEVEL": "WARNING",
        "RECONCILER_THRESHOLD_S": str(threshold_s),
    }
    child = Child(name, [sys.executable, "-m", "reconciler"], log_path=run_dir / f"{name}.log", env=env)
    child.start()
    return child, metrics_port


def workers(
    bootstrap: str, broker: str, prefix: str, run_dir: Path, threshold_s: float, count: int
) -> list[tuple[Child, int]]:
    """`count` worker processes of one reconciler on `prefix`: they share its partitions."""
    return [worker(bootstrap, broker, prefix, run_dir, threshold_s, i) for i in range(1, count + 1)]


async def counters(client: httpx.AsyncClient, metrics_port: int) -> dict[str, float] | None:
    """The worker's events applied and orders flagged so far, or None while it does not answer."""
    try:
        text = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    except httpx.HTTPError:
        return None
    out = {"events": 0.0, "flagged": 0.0}
    for line in text.splitlines():
        for name, key in (("reconciler_events_total{", "events"), ("reconciler_overdue_flagged_total{", "flagged")):
            if line.startswith(name):
                out[key] += float(line.split()[-1])
    return out


async def time_workers(ports: list[int], events: int, timeout_s: float = 600) -> list[tuple[float, float, float]]:
    """Samples (monotonic time, events applied, orders flagged), summed over the workers, until all `events`
    are applied and the flagged count has not moved for two seconds."""
    samples: list[tuple[float, float, float]] = []
    last: dict[int, dict[str, float]] = {}
    async with httpx.AsyncClient(timeout=2) as client:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for port in ports:  # a worker that does not answer this time keeps its last counts
                now = await counters(client, port)
                if now is not None:
                    last[port] = now
            if last:
                sums = [sum(c[k] for c in last.values()) for k in ("events", "flagged")]
                samples.append((time.monotonic(), sums[0], sums[1]))
                if _settled(samples, events):
                    break
            await asyncio.sleep(0.25)
    return samples


async def time_worker(port: int, events: int, timeout_s: float = 600) -> list[tuple[float, float, float]]:
    return await time_workers([port], events, timeout_s)


def _settled(samples: list[tuple[float, float, float]], events: int, quiet_s: float = 2.0) -> bool:
    """Every event applied, and no order flagged in the last `quiet_s` seconds since then."""
    done_at = next((t for t, n, _ in samples if n >= events), None)
    at, _, flagged = samples[-1]
    if done_at is None or at - done_at < quiet_s:
        return False
    before = max((f for t, _, f in samples if t <= at - quiet_s), default=-1.0)
    return before == flagged


def throughput(samples: list[tuple[float, float, float]], events: int) -> dict[str, Any]:
    """events/s from the first event applied to the last; `steady_events_per_s` from the tenth to the
    ninetieth hundredth of the events (leaves out a start and a tail, such as two workers' first rebalance)."""
    moving = [(t, n) for t, n, _ in samples if n > 0]
    if len(moving) < 2:
        return {"events": events, "error": "the worker processed nothing"}
    (t0, n0), (t1, n1) = moving[0], next(s for s in moving if s[1] == moving[-1][1])
    rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(moving) if b[0] > a[0] and b[1] > a[1]]
    return {
        "events": events,
        "processed": int(n1),
        "seconds": round(t1 - t0, 2),
        "events_per_s": round((n1 - n0) / (t1 - t0)) if t1 > t0 else None,
        "steady_events_per_s": _between(moving, 0.1 * events, 0.9 * events),
        "median_interval_events_per_s": round(statistics.median(rates)) if rates else None,
    }


def _between(moving: list[tuple[float, float]], low: float, high: float) -> int | None:
    start = next(((t, n) for t, n in moving if n >= low), None)
    end = next(((t, n) for t, n in moving if n >= high), None)
    if start is None or end is None or end[0] <= start[0]:
        return None
    return round((end[1] - start[1]) / (end[0] - start[0]))


def main(orders: int, out: Path, bootstrap: str | None, broker: str, live_rate: float, live_s: float) -> dict[str, Any]:
    """The engine alone, then (with a broker) the side-by-side catch-up and the live detection run."""
    from harness.bench import peers

    out = out.resolve()  # the workers it starts run elsewhere: their data directories must not be relative
    report: dict[str, Any] = {"machine": {"cores": os.cpu_count()}, "orders": orders}
    report["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    report["engine"] = bench_engine(orders)
    if bootstrap:
        where = peers.Where(bootstrap, broker, "", out.parent / "bench-run")
        options = peers.PeerOptions(catch_up_orders=orders, live_rate=live_rate, live_s=live_s)
        report["catch_up"] = asyncio.run(peers.throughput_side_by_side(where, options))
        report["live"] = asyncio.run(peers.live_reconciler(where, options))
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report
