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
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from contracts.base import Message
from contracts.codec import encode, envelope_for
from contracts.events import CreditPosted, PaymentSucceeded
from contracts.topics import Topic
from reconciler.domain import OrderState, Policy
from reconciler.engine import Engine
from servicekit.kafka import KafkaPublisher, ensure_topics

T0 = datetime(2026, 11, 22, tzinfo=UTC)


class DictStates:
    """Order states stored as JSON-ready dicts, like the faust table stores them."""

    def __init__(self) -> None:
        self.data: dict[bytes, dict[str, Any]] = {}

    def get(self, order_id: str) -> OrderState | None:
        raw = self.data.get(order_id.encode())
        return None if raw is None else OrderState.from_json(raw)

    def put(self, state: OrderState) -> None:
        self.data[state.order_id.encode()] = state.to_json()

    def values(self) -> Iterator[OrderState]:
        return (OrderState.from_json(v) for v in list(self.data.values()))


def event_log(orders: int, loss: float = 0.05, dup: float = 0.1, seed: int = 7) -> list[Message]:
    rng = random.Random(seed)  # noqa: S311 - a reproducible event log, not crypto
    log: list[Message] = []
    for i in range(orders):
        oid = f"ord_{i:08d}"
        paid_at = T0 + timedelta(milliseconds=i)
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
    log = event_log(orders)
    engine = Engine(DictStates(), Policy(threshold_s=120))
    now = T0
    started = time.perf_counter()
    for message in log:
        result = engine.apply(message, 0, now)
        if result is not None:
            state, _ = result
            engine.commit(state)
    elapsed = time.perf_counter() - started
    tick_started = time.perf_counter()
    due = engine.due(0, T0 + timedelta(hours=1), T0 + timedelta(hours=1))
    tick_s = time.perf_counter() - tick_started
    return {
        "events": len(log),
        "seconds": round(elapsed, 3),
        "events_per_s": round(len(log) / elapsed),
        "overdue_found": len(due),
        "tick_seconds_for_all_overdue": round(tick_s, 4),
    }


async def bench_faust(orders: int, bootstrap: str, broker: str, run_dir: Path) -> dict[str, Any]:
    """Produce the log, then time a fresh reconciler worker reading all of it."""
    from credited.stack.processes import Child, free_port

    prefix = f"bench{int(time.time())}."
    await ensure_topics(bootstrap, [t.qualified(prefix) for t in Topic], 6)
    publisher = KafkaPublisher(bootstrap, idempotence=broker == "apache", client_id="bench", topic_prefix=prefix)
    await publisher.start()
    log = event_log(orders)
    try:
        batch = []
        for message in log:
            topic = Topic.PAYMENTS_EVENTS if isinstance(message, PaymentSucceeded) else Topic.LEDGER_EVENTS
            batch.append((topic.qualified(prefix), encode(message, envelope_for(message, producer="bench"))))
            if len(batch) >= 2000:
                await publisher.publish_many(batch)
                batch = []
        await publisher.publish_many(batch)
    finally:
        await publisher.stop()
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": bootstrap,
        "KAFKA_BROKER": broker,
        "CREDITED_TOPIC_PREFIX": prefix,
        "RECONCILER_HTTP_PORT": str(port),
        "RECONCILER_DATA_DIR": str(run_dir / "reconciler"),
        "CREDITED_LOG_LEVEL": "WARNING",
        "RECONCILER_THRESHOLD_S": "3600",
    }
    child = Child(
        "reconciler-bench", [sys.executable, "-m", "reconciler"], log_path=run_dir / "reconciler.log", env=env
    )
    child.start()
    samples: list[tuple[float, float]] = []
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                try:
                    text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                except httpx.HTTPError:
                    await asyncio.sleep(0.5)
                    continue
                done = sum(
                    float(line.split()[-1]) for line in text.splitlines() if line.startswith("reconciler_events_total{")
                )
                samples.append((time.monotonic(), done))
                if done >= len(log):
                    break
                await asyncio.sleep(0.25)
    finally:
        child.stop()
    moving = [(t, n) for t, n in samples if n > 0]
    if len(moving) < 2:
        return {"events": len(log), "error": "the worker processed nothing", "log": child.tail()}
    (t0, n0), (t1, n1) = moving[0], moving[-1]
    rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(moving) if b[0] > a[0]]
    return {
        "events": len(log),
        "processed": int(n1),
        "seconds": round(t1 - t0, 2),
        "events_per_s": round((n1 - n0) / (t1 - t0)),
        "median_interval_events_per_s": round(statistics.median(rates)),
    }


def main(orders: int, out: Path, bootstrap: str | None, broker: str) -> dict[str, Any]:
    report: dict[str, Any] = {"machine": {"cores": os.cpu_count()}, "orders": orders}
    report["engine"] = bench_engine(orders)
    if bootstrap:
        report["faust_worker"] = asyncio.run(bench_faust(orders, bootstrap, broker, out.parent / "bench-run"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report
