"""`credited bench`: the whole pipeline at rising rates, each service alone, the peer and the baseline side
by side, and a profile of the busiest services; one JSON file and one Markdown report with plots."""

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from credited.stack.local import SHAPE, LocalStack, StackConfig
from credited.stack.processes import free_port
from harness.bench import isolated
from harness.bench.infra import SCRIPT, Infra
from harness.bench.machine import UsageSampler, describe_machine, source_state
from harness.bench.peers import PeerOptions, Where, side_by_side
from harness.bench.pipeline import PipelineOptions, Step, rising_rates, run_step
from harness.bench.profiling import profile_processes
from harness.bench.statements import StatementCounter
from harness.simulator.receiver import WebhookReceiver

log = logging.getLogger(__name__)

PROFILED = ("reconciler", "ledger", "payments", "notifier")


@dataclass(frozen=True)
class BenchOptions:
    run_dir: Path
    broker: str = "apache"
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)
    peers: PeerOptions = field(default_factory=PeerOptions)
    engine_orders: int = 20_000
    payments_callbacks: int = 20_000
    profile_s: float = 10.0
    quick: bool = False
    bootstrap: str = ""
    """A running broker (of kind `broker`) instead of starting one; likewise `database_url`."""
    database_url: str = ""

    @classmethod
    def quick_run(cls, run_dir: Path, broker: str, bootstrap: str = "", database_url: str = "") -> "BenchOptions":
        """One short step and tiny logs: the machinery, not the figures."""
        return cls(
            run_dir=run_dir,
            broker=broker,
            pipeline=PipelineOptions(rates=(20,), step_s=3.0, settle_timeout_s=30.0, warmup_s=0.0, min_steps=1),
            peers=PeerOptions(catch_up_orders=300, live_rate=50, live_s=3.0),
            engine_orders=1000,
            payments_callbacks=50,
            profile_s=1.0,
            quick=True,
            bootstrap=bootstrap,
            database_url=database_url,
        )


async def _pipeline(infra: Infra, options: BenchOptions) -> dict[str, Any]:
    receiver = WebhookReceiver(free_port(), "webhook-secret")
    await receiver.start()
    tag = f"bench{uuid.uuid4().hex[:6]}"
    config = StackConfig(
        run_dir=options.run_dir / "pipeline",
        kafka_bootstrap=infra.bootstrap,
        database_url=infra.database_url,
        kafka_broker=infra.broker,
        topic_prefix=f"{tag}.",
        db_schema_prefix=f"{tag}_",
        threshold_s=options.pipeline.threshold_s,
        credit_loss=options.pipeline.credit_loss,
        webhook_url=receiver.url,
        webhook_secret=receiver.secret,
        log_level="WARNING",
        ports={name: free_port() for name in ("payments", "ledger", "reconciler", "notifier")},
    )
    stack = LocalStack(config)
    try:
        await asyncio.to_thread(stack.start)
        # a reconciler side runs as several worker processes (its members), each sampled on its own; services
        # may also run as several processes of one (payments' copies): each is counted with its descendants
        pids = {m.name: m.pid for child in stack.services.values() for m in getattr(child, "members", [child])}
        usage = UsageSampler(
            {**pids, **infra.pids, "load generator": os.getpid()}, forking=frozenset({*pids, "postgres"})
        )
        usage.start()
        counter = StatementCounter(infra.database_url)
        statements = counter if await counter.available() else None
        try:
            steps = await rising_rates(stack, receiver, options.pipeline, usage, statements)
            profile = await _profile(stack, receiver, options, steps, pids)
        finally:
            usage.stop()
    finally:
        await asyncio.to_thread(stack.stop)
        await receiver.stop()
    best = max((s.figures for s in steps if s.sustained), key=lambda f: f["orders_per_s"], default=None)
    shape = {name: getattr(config, name) for name in SHAPE}
    steps_out = [s.figures | {"sustained": s.sustained} for s in steps]
    return {"steps": steps_out, "best": best, "profile": profile, "shape": shape}


async def _profile(
    stack: LocalStack, receiver: WebhookReceiver, options: BenchOptions, steps: list[Step], pids: dict[str, int]
) -> dict[str, Any]:
    """One more step at the first rate the pipeline missed (where it saturates: the next bottleneck), else
    at the highest, with py-spy on the services and the load generator; its figures are not part of the
    search (the sampler costs a little CPU)."""
    import httpx

    missed = [s.figures["target_rate"] for s in steps if not s.sustained]
    rate = missed[0] if missed else steps[-1].figures["target_rate"]
    step = PipelineOptions(**{**asdict(options.pipeline), "step_s": options.profile_s})
    async with httpx.AsyncClient(timeout=30, headers=stack.headers) as client:
        profiled = {**{n: pids[n] for n in PROFILED}, "load generator": os.getpid()}
        profiling = asyncio.create_task(
            profile_processes(
                profiled, options.profile_s, options.run_dir / "profiles", alone=frozenset({"load generator"})
            )
        )
        figures = await run_step(stack, receiver, client, rate, step)
        hot = await profiling
    return {"rate": rate, "orders_per_s": figures["orders_per_s"], "processes": hot}


async def _isolated(infra: Infra, options: BenchOptions) -> dict[str, Any]:
    run_dir = options.run_dir / "isolated"
    return {
        "reconciler_engine": await asyncio.to_thread(isolated.bench_reconciler_engine, options.engine_orders),
        "payments": await isolated.bench_payments(
            infra.bootstrap,
            infra.database_url,
            infra.broker,
            run_dir,
            options.payments_callbacks,
            infra_pids=infra.pids,
        ),
        "notifier": await isolated.bench_notifier(
            infra.bootstrap, infra.database_url, infra.broker, run_dir / "notifier.json", options.quick
        ),
        "ledger": await isolated.bench_ledger(infra.database_url, run_dir / "ledger.json", options.quick),
    }


async def _timed(phases: dict[str, float], name: str, work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        return await work
    finally:
        phases[name] = round(time.monotonic() - started, 1)


async def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Everything, in order, on one broker and one PostgreSQL; the figures as one dict."""
    started = time.monotonic()
    external = options.broker if options.bootstrap else ""
    infra = Infra(options.run_dir, options.broker, external, options.bootstrap, options.database_url)
    await asyncio.to_thread(infra.start)
    report: dict[str, Any] = {"machine": describe_machine(infra.broker), "quick": options.quick}
    report["source"] = source_state(SCRIPT.parents[1])
    if infra.note:
        report["machine"]["broker_note"] = infra.note
    report["options"] = {
        "pipeline": asdict(options.pipeline),
        "peers": asdict(options.peers),
        "engine_orders": options.engine_orders,
        "payments_callbacks": options.payments_callbacks,
    }
    phases: dict[str, float] = {}
    report["phase_s"] = phases
    try:
        log.warning("broker %s at %s; the whole pipeline at rising rates", infra.broker, infra.bootstrap)
        phases["broker_and_postgres"] = round(time.monotonic() - started, 1)
        report["pipeline"] = await _timed(phases, "pipeline", _pipeline(infra, options))
        log.warning("each service alone")
        report["isolated"] = await _timed(phases, "isolated", _isolated(infra, options))
        log.warning("reconciler, Bytewax and periodic SQL on the same log")
        where = Where(infra.bootstrap, infra.broker, infra.database_url, options.run_dir / "peers")
        report["peers"] = await _timed(phases, "side_by_side", side_by_side(where, options.peers))
        report["isolated"]["reconciler_worker"] = report["peers"]["catch_up"]["reconciler"]
    finally:
        await asyncio.to_thread(infra.stop)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    return report
