"""The whole pipeline at rising rates: orders and signed callbacks over HTTP, with duplicates and dropped
credits, until pay-to-credit p99 reaches the target or requests fail.

Each step places `rate x step_s` orders at `rate` per second, waits until every paid order is settled at
the webhook, and scores the step against the simulator's ground truth (credit_publication_times, score).
"""

import asyncio
import contextlib
import gc
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from contracts.topics import Topic
from credited.stack.local import LocalStack
from harness.bench import wrk
from harness.bench.cpu import GENERATORS
from harness.bench.driver import AiohttpSimulator, ClientTimes, session
from harness.bench.machine import UsageSampler
from harness.bench.statements import StatementCounter
from harness.simulator.receiver import Received, WebhookReceiver
from harness.simulator.run import Load, Truth, credit_publication_times, fast_reads, percentile, score, settled

log = logging.getLogger(__name__)


WARMUP_RATE = 200.0
"""The warm-up's orders/s. A fresh Apache Kafka spends its first minutes compiling its hot paths: at 25/s right
after a 15-s warm-up at 50/s, the broker used 20-27 ms of CPU per order and status-to-push p99 was 56-80 ms; at
25.5/s after steps at 200 and 400/s, 9-13 ms and 25-38 ms (bench-revisions on 94d6973, two shapes, two rounds
each). A broker in service has long done that, so the steps are measured after it."""

WARMUP_S = 20.0
"""How long the warm-up at WARMUP_RATE lasts."""


@dataclass(frozen=True)
class PipelineOptions:
    # rising by about the square root of two from 25/s, so the highest sustained rate is found within ~40%
    rates: tuple[float, ...] = (10, 25, 35, 50, 70, 100, 140, 200, 280, 400, 560, 800, 1100, 1600, 2200, 3200, 4500)
    min_steps: int = 3
    """Steps run even past a miss, so the plots show how latency grows with the rate."""
    step_s: float = 15.0
    threshold_s: float = 2.0
    credit_loss: float = 0.02
    duplicates: float = 0.1
    target_p99_s: float = 1.0
    settle_timeout_s: float = 60.0
    concurrency: int = 512
    """Connections the load generator keeps to payments (orders in flight at most): the rate is offered as long
    as answers take less than this over the request rate (150 ms at 3,300 requests/s)."""
    generator: str = "wrk"
    """wrk (when installed: load.lua, native, its CPU reported apart) or python (the simulator over aiohttp)."""
    warmup_s: float = WARMUP_S
    warmup_rate: float = WARMUP_RATE
    """A first step, not reported: consumer groups joined, connections open, and the broker's JIT done (see
    WARMUP_RATE)."""


@dataclass(frozen=True)
class Step:
    """One rate step: its figures, and whether the pipeline kept up."""

    figures: dict[str, Any]
    sustained: bool


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def push_latencies(truth: Truth, received: Received) -> list[float]:
    """Status change (its changed_at) to the notification reaching the webhook, for this step's orders."""
    out = []
    for nid, payload in received.payloads.items():
        if payload["order_id"] in truth.orders and payload.get("changed_at"):
            out.append(received.first_seen[nid] - datetime.fromisoformat(payload["changed_at"]).timestamp())
    return out


def credit_push_latencies(truth: Truth, received: Received) -> list[float]:
    """The ledger's credit (`credited_at`) to its credited notification reaching the webhook, for this step's orders.
    Status-to-push starts at the reconciler's round (`changed_at`); this also holds every wait before that round:
    the reconciler's fetch and its round's linger."""
    out = []
    for nid, payload in received.payloads.items():
        if payload["order_id"] in truth.orders and payload["status"] == "credited" and payload.get("credited_at"):
            out.append(received.first_seen[nid] - datetime.fromisoformat(payload["credited_at"]).timestamp())
    return out


def credit_latencies(truth: Truth, received: Received, dropped: set[str]) -> list[float]:
    """Payment to credit for orders whose first credit was not dropped on purpose (those are the
    detection figures: their credit comes from the reconciler's retry after the deadline)."""
    out = []
    for payload in received.payloads.values():
        oid = payload["order_id"]
        if oid in truth.paid and oid not in dropped and payload["status"] == "credited" and payload.get("credited_at"):
            out.append(datetime.fromisoformat(payload["credited_at"]).timestamp() - truth.orders[oid]["paid_at"])
    return out


async def _settle(truth: Truth, received: Received, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s and settled(truth, received) < len(truth.paid):
        received.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(received.changed.wait(), 0.5)
    return time.monotonic() - started


async def http_durations(client: httpx.AsyncClient, url: str) -> dict[str, tuple[float, float]]:
    """A service's own answer times so far, by route: (sum of seconds, count), from its /metrics at `url`."""
    text = (await client.get(url)).text
    out: dict[str, tuple[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "credited_http_request_duration_seconds":
            continue
        for sample in family.samples:
            route = sample.labels.get("route", "")
            total, count = out.get(route, (0.0, 0.0))
            if sample.name.endswith("_sum"):
                out[route] = (total + sample.value, count)
            elif sample.name.endswith("_count"):
                out[route] = (total, count + sample.value)
    return out


def mean_ms(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean answer time per route between two readings, for the routes the load used."""
    means = {}
    for route, (total, count) in after.items():
        total0, count0 = before.get(route, (0.0, 0.0))
        if count > count0 and not route.startswith(("/metrics", "/healthz")):
            means[route] = round((total - total0) / (count - count0) * 1000, 1)
    return means


async def _drive(
    stack: LocalStack, client: httpx.AsyncClient, load: Load, truth: Truth, options: PipelineOptions
) -> dict[str, Any]:
    """Place and pay the step's orders; how long it took, as the generator and as payments saw it."""
    answered = await http_durations(client, stack.metrics_url("payments"))
    if options.generator == "wrk" and wrk.available():
        run = await wrk.drive(
            stack.url("payments"), stack.config.psp_secret, load, truth, stack.config.run_dir, api_key=stack.api_key
        )
        driven = {"drive_s": round(run.duration_s, 2), **run.figures()}
    else:
        times = ClientTimes()
        async with session(load.concurrency, times, headers=stack.headers) as http:
            sim = AiohttpSimulator(stack.url("payments"), stack.config.psp_secret, client, http)
            times.take()
            started = time.monotonic()
            await sim.drive(load, truth)
            driven = {"drive_s": round(time.monotonic() - started, 2), "client_request": times.take()}
        driven["generator"] = "python (the simulator over aiohttp, in the load generator process)"
    driven["orders_per_s"] = round(len(truth.orders) / max(driven["drive_s"], 1e-9), 1)
    driven["payments_answer_mean_ms"] = mean_ms(answered, await http_durations(client, stack.metrics_url("payments")))
    return driven


def _with_generator(
    sampled: dict[str, dict[str, float]], driven: dict[str, Any], busy_s: float
) -> dict[str, dict[str, Any]]:
    """wrk runs outside the sampled processes: its CPU (from the kernel when it exits) joins them."""
    processes: dict[str, dict[str, Any]] = dict(sampled)
    cpu = driven.get("generator_cpu_s")
    if cpu is not None:
        cores = round(cpu / busy_s, 2) if busy_s > 0 else 0.0
        # its peak memory is not known: the kernel's figure for the child counts the Python it was forked from
        processes[WRK] = {"cpu_s": round(cpu, 2), "cores": cores, "peak_rss_mib": None}
    return processes


WRK = GENERATORS[1]


async def run_step(
    stack: LocalStack,
    receiver: WebhookReceiver,
    client: httpx.AsyncClient,
    rate: float,
    options: PipelineOptions,
    usage: UsageSampler | None = None,
    statements: StatementCounter | None = None,
) -> dict[str, Any]:
    """One step: drive, wait until every paid order settled, then score. CPU, and PostgreSQL's statements and
    commits, are counted from the first order to the last settlement (scoring reads the ledger order by order,
    which is not the pipeline's work)."""
    # The webhook receiver stamps each arrival in a thread of this process, so a full collection here (what the
    # earlier steps left, tens of thousands of orders) would hold its stamps up by 50-100 ms: left out from now on.
    gc.collect()
    gc.freeze()
    truth = Truth()
    orders = max(1, round(rate * options.step_s))
    load = Load(orders=orders, rate=rate, duplicate_share=options.duplicates, concurrency=options.concurrency)
    if usage is not None:
        usage.mark()
    if statements is not None:
        await statements.mark()
    started = time.monotonic()
    driven = await _drive(stack, client, load, truth, options)
    settle_s = await _settle(truth, receiver.received, options.settle_timeout_s)
    busy_s = time.monotonic() - started
    processes = _with_generator(usage.since_mark(busy_s) if usage is not None else {}, driven, busy_s)
    asked = await statements.per_order(len(truth.orders)) if statements is not None else None
    await asyncio.sleep(1.0)  # late duplicates and status changes land before counting
    topic = Topic.LEDGER_EVENTS.qualified(stack.config.topic_prefix)
    async with fast_reads(stack.headers) as reads:
        figures = await score(
            truth,
            receiver.received,
            ledger_url=stack.url("ledger"),
            client=client,
            elapsed_s=time.monotonic() - started,
            threshold_s=options.threshold_s,
            credit_visible_at=await credit_publication_times(stack.bootstrap, topic),
            reads=reads,
        )
    dropped = set((await client.get(f"{stack.url('ledger')}/v1/faults")).json()["credit_dropped"]) & truth.paid
    return {
        "target_rate": rate,
        **driven,
        "settle_s": round(settle_s, 2),
        "measured_s": round(busy_s, 2),
        "unsettled": len(truth.paid) - settled(truth, receiver.received),
        **figures,
        **_latencies(truth, receiver.received, dropped, figures),
        "processes": processes,
        "postgres_statements": asked,
        "error_samples": truth.errors[:3],
    }


def _latencies(truth: Truth, received: Received, dropped: set[str], figures: dict[str, Any]) -> dict[str, Any]:
    credit = credit_latencies(truth, received, dropped)
    push = push_latencies(truth, received)
    credit_push = credit_push_latencies(truth, received)
    flagged = figures["flagged_overdue"]
    hits = flagged - figures["flagged_not_dropped"]
    return {
        "pay_to_credit_all_p99_s": figures["pay_to_credit_p99_s"],
        "pay_to_credit_p50_s": _round(percentile(credit, 50)),
        "pay_to_credit_p99_s": _round(percentile(credit, 99)),
        "status_to_push_p50_ms": _ms(percentile(push, 50)),
        "status_to_push_p99_ms": _ms(percentile(push, 99)),
        "credit_to_push_p50_ms": _ms(percentile(credit_push, 50)),
        "credit_to_push_p99_ms": _ms(percentile(credit_push, 99)),
        "detection_precision": round(hits / flagged, 4) if flagged else None,
        "detection_recall": round(hits / len(dropped), 4) if dropped else None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


HARMS = ("credited_twice", "balance_mismatches", "duplicate_notifications", "lost", "credited_and_refunded")
"""A run's figures that count harm to money or to users: each must be 0."""


def kept_up(figures: dict[str, Any], options: PipelineOptions) -> bool:
    p99 = figures["pay_to_credit_p99_s"]
    return (
        p99 is not None
        and p99 < options.target_p99_s
        and figures["errors"] == 0
        and figures["unsettled"] == 0
        and figures["orders_per_s"] >= 0.9 * figures["target_rate"]
        # Throughput bought by breaking exactly-once is no throughput: such a step never heads the report.
        and all(figures.get(harm, 0) == 0 for harm in HARMS)
    )


async def rising_rates(
    stack: LocalStack,
    receiver: WebhookReceiver,
    options: PipelineOptions,
    usage: UsageSampler,
    statements: StatementCounter | None = None,
) -> list[Step]:
    """Step through `options.rates` until a step misses the target (and at least `min_steps` ran)."""
    steps: list[Step] = []
    # Scoring reads; the load goes through aiohttp.
    async with httpx.AsyncClient(timeout=30, headers=stack.headers) as client:
        if options.warmup_s > 0:
            await run_step(stack, receiver, client, options.warmup_rate, replace(options, step_s=options.warmup_s))
        for rate in options.rates:
            figures = await run_step(stack, receiver, client, rate, options, usage, statements)
            step = Step(figures, kept_up(figures, options))
            log.warning(
                "step %.0f/s: %.1f orders/s, pay-to-credit p99 %s s, %s",
                rate,
                figures["orders_per_s"],
                figures["pay_to_credit_p99_s"],
                "kept up" if step.sustained else "missed",
            )
            steps.append(step)
            if not step.sustained and len(steps) >= options.min_steps:
                break
    return steps
