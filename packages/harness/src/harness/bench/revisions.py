"""`credited bench-revisions`: the whole pipeline at fixed rate steps on two or more revisions of the services,
side by side in one run, to tell a change's effect from a shared machine's drift.

Each revision is checked out into a git worktree of its own and its services run from there (PYTHONPATH); the
load generator, the scoring and the simulated provider are this tree's, the same for all. Every round runs each
revision in turn, in the order given, on a broker and a PostgreSQL of its own started for it (so each pays the
same JIT warm-up and none inherits another's tables), a warm-up step first (harness.bench.pipeline.WARMUP_RATE:
a broker fresh from its start is still compiling its hot paths); the report gives each figure's
median over the rounds per revision and rate, with the ratio to the first revision. Per-process CPU per order is
counted from a step's first order to its last settlement, as `credited bench` does. At a rate that fills the
machine, CPU per order only says how many orders share it: compare latencies there, CPU below it.

A revision may also name how its stack runs, so one commit can be compared with itself in another shape:
`main:reconciler_workers=1,KAFKA_LINGER_MS=2` runs main with one reconciler worker and that variable set for every
service. Lower-case names are the stack's process counts (credited.stack.local.SHAPE), upper-case ones
environment variables. The broker's own (BROKER_ENV) go to the Apache Kafka that revision's rounds start, not to the
services: `main:KAFKA_SERVER_PROPERTIES=num.io.threads=2;num.network.threads=2` compares broker settings.
"""

import asyncio
import logging
import os
import statistics
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from credited.stack.local import SHAPE, LocalStack, StackConfig
from credited.stack.processes import free_port
from harness.bench.cpu import GENERATORS
from harness.bench.infra import Infra
from harness.bench.machine import UsageSampler
from harness.bench.pipeline import WARMUP_RATE, WARMUP_S, PipelineOptions, run_step
from harness.bench.statements import StatementCounter
from harness.simulator.receiver import WebhookReceiver

log = logging.getLogger(__name__)

SOURCES = ("packages/*/src", "services/*/src")
"""Where a revision's importable code lives (the venv's editable installs point at this tree's)."""

FIGURES = (
    ("orders_per_s", "placed/s"),
    ("pay_to_credit_p50_s", "pay→credit p50 s"),
    ("pay_to_credit_p99_s", "pay→credit p99 s"),
    ("status_to_push_p99_ms", "push p99 ms"),
    ("credit_to_push_p50_ms", "credit→push p50 ms"),
    ("credit_to_push_p99_ms", "credit→push p99 ms"),
    ("detection_latency_p99_s", "detect p99 s"),
    ("stack_cpu_ms_per_order", "stack CPU ms/order"),
    ("statements_per_order", "statements/order"),
    ("commits_per_order", "commits/order"),
)
"""The figures of a step the report compares, with their column names."""


BROKER_ENV = ("KAFKA_SERVER_PROPERTIES", "KAFKA_JVM_OPTS", "KAFKA_HEAP_OPTS")
"""A variant's variables for scripts/apache-kafka, which starts each round's broker, rather than for the services."""


EXACTNESS = ("credited_twice", "unsettled", "errors", "detection_precision", "detection_recall")
"""What a step must get right whatever its speed; kept per round, so a round that did not says how. `errors`
counts the requests that failed, the load generator's unanswered ones too (a lost request leaves its order
unplaced or unpaid, and the step's rate and CPU counted over the generator's wait for it)."""

GENERATOR = ("socket_errors", "generator_lost_requests")
"""What the load generator (wrk) saw go wrong on its connections; kept per round."""


@dataclass(frozen=True)
class Variant:
    """A revision and how its stack runs: `REV` or `REV:name=value,...` (see the module's docstring)."""

    revision: str
    shape: dict[str, int]
    env: dict[str, str]

    @property
    def broker_env(self) -> dict[str, str]:
        """The variables for the broker its rounds start (BROKER_ENV)."""
        return {name: value for name, value in self.env.items() if name in BROKER_ENV}

    @property
    def services_env(self) -> dict[str, str]:
        """The variables for its services: all but the broker's."""
        return {name: value for name, value in self.env.items() if name not in BROKER_ENV}

    @classmethod
    def parse(cls, text: str) -> "Variant":
        revision, _, settings = text.partition(":")
        shape: dict[str, int] = {}
        env: dict[str, str] = {}
        for pair in filter(None, settings.split(",")):
            name, equals, value = pair.partition("=")
            if not equals or not name or not value:
                raise ValueError(f"{pair!r} in {text!r} is not name=value")
            if name.isupper():
                env[name] = value
            elif name in SHAPE:
                if not value.isdigit() or int(value) < 1:
                    raise ValueError(f"{name} in {text!r} must be a whole number from 1, not {value!r}")
                shape[name] = int(value)
            else:
                known = ", ".join(SHAPE)
                raise ValueError(f"{name!r} in {text!r} is neither one of {known} nor an UPPER_CASE variable")
        if not revision:
            raise ValueError(f"{text!r} names no revision")
        return cls(revision, shape, env)


@dataclass(frozen=True)
class RevisionOptions:
    run_dir: Path
    revisions: tuple[str, ...]
    rates: tuple[float, ...] = (100.0, 140.0)
    step_s: float = 15.0
    rounds: int = 2
    warmup_rate: float = WARMUP_RATE
    warmup_s: float = WARMUP_S
    broker: str = "apache"
    repo: Path = Path(".")


def python_path(tree: Path) -> str:
    """The source directories of a checked-out tree, for PYTHONPATH."""
    return os.pathsep.join(str(p) for pattern in SOURCES for p in sorted(tree.glob(pattern)))


def checkout(repo: Path, revision: str, into: Path) -> Path:
    """`revision` as a detached worktree at `into`; its commit id is what the report names."""
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--force", "--detach", str(into), revision], check=True)
    return into


def remove(repo: Path, tree: Path) -> None:
    subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], check=False)


def commit_of(repo: Path, revision: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", revision], capture_output=True, text=True)
    return out.stdout.strip() or revision


def summary(step: dict[str, Any]) -> dict[str, Any]:
    """The figures of one step the comparison keeps, CPU per order per process among them."""
    orders = max(1, round(step["target_rate"] * step["step_s"]))  # what run_step placed
    cpu = {name: round(1000 * p["cpu_s"] / orders, 3) for name, p in step["processes"].items()}
    statements = step.get("postgres_statements") or {}
    return {
        "rate": step["target_rate"],
        **{key: step.get(key) for key, _ in FIGURES},  # the step's own; the three below are worked out here
        "stack_cpu_ms_per_order": round(sum(ms for name, ms in cpu.items() if name not in GENERATORS), 3),
        "statements_per_order": statements.get("statements_per_order"),
        "commits_per_order": statements.get("commits_per_order"),
        "cpu_ms_per_order": cpu,
        **{key: step.get(key) for key in EXACTNESS + GENERATOR},
        "kept_exact": step.get("credited_twice") == 0
        and step.get("unsettled") == 0
        and step.get("errors") == 0
        and step.get("detection_precision") in (1, None)
        and step.get("detection_recall") in (1, None),
    }


async def one_round(tree: Path, variant: Variant, options: RevisionOptions, run_dir: Path) -> list[dict[str, Any]]:
    """The revision at `tree`, shaped as `variant` says, on a fresh broker and PostgreSQL: a warm-up step, then
    each rate; their summaries."""
    infra = Infra(run_dir, options.broker, broker_env=variant.broker_env)
    await asyncio.to_thread(infra.start)
    if variant.broker_env and infra.broker != "apache":
        log.warning("%s names broker settings, but its round runs on %s: they do not apply", variant, infra.broker)
    receiver = WebhookReceiver(free_port(), "webhook-secret")
    await receiver.start()
    tag = f"rev{uuid.uuid4().hex[:6]}"
    pipeline = PipelineOptions(step_s=options.step_s)
    stack = LocalStack(
        StackConfig(
            run_dir=run_dir / "pipeline",
            kafka_bootstrap=infra.bootstrap,
            database_url=infra.database_url,
            kafka_broker=infra.broker,
            topic_prefix=f"{tag}.",
            db_schema_prefix=f"{tag}_",
            threshold_s=pipeline.threshold_s,
            credit_loss=pipeline.credit_loss,
            webhook_url=receiver.url,
            webhook_secret=receiver.secret,
            log_level="WARNING",
            ports={name: free_port() for name in ("payments", "ledger", "reconciler", "notifier")},
            extra_env={**variant.services_env, "PYTHONPATH": python_path(tree)},
            **variant.shape,  # type: ignore[arg-type]
        )
    )
    steps: list[dict[str, Any]] = []
    try:
        await asyncio.to_thread(stack.start)
        pids = {m.name: m.pid for child in stack.services.values() for m in getattr(child, "members", [child])}
        usage = UsageSampler({**pids, **infra.pids, GENERATORS[0]: os.getpid()}, forking=frozenset({*pids, "postgres"}))
        usage.start()
        counter = StatementCounter(infra.database_url)
        statements = counter if await counter.available() else None
        try:
            async with httpx.AsyncClient(timeout=30, headers=stack.headers) as client:
                if options.warmup_s > 0:
                    warm = replace(pipeline, step_s=options.warmup_s)
                    await run_step(stack, receiver, client, options.warmup_rate, warm)
                for rate in options.rates:
                    step = await run_step(stack, receiver, client, rate, pipeline, usage, statements)
                    steps.append(summary({**step, "step_s": options.step_s}))
        finally:
            usage.stop()
    finally:
        await asyncio.to_thread(stack.stop)
        await receiver.stop()
        await asyncio.to_thread(infra.stop)
    return steps


def medians(runs: dict[str, list[list[dict[str, Any]]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per revision and rate (`rate_key`, a JSON key), each figure's median over the rounds (None where no round
    had it)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for revision, rounds in runs.items():
        by_rate: dict[float, list[dict[str, Any]]] = {}
        for steps in rounds:
            for step in steps:
                by_rate.setdefault(step["rate"], []).append(step)
        out[revision] = {}
        for rate, steps in by_rate.items():
            figures: dict[str, Any] = {"rounds": len(steps), "kept_exact": all(s["kept_exact"] for s in steps)}
            for key, _ in FIGURES:
                values = [s[key] for s in steps if isinstance(s.get(key), int | float)]
                figures[key] = round(statistics.median(values), 4) if values else None
            names = sorted({n for s in steps for n in s["cpu_ms_per_order"]})
            figures["cpu_ms_per_order"] = {
                n: round(statistics.median([s["cpu_ms_per_order"][n] for s in steps if n in s["cpu_ms_per_order"]]), 3)
                for n in names
            }
            out[revision][rate_key(rate)] = figures
    return out


def rate_key(rate: float) -> str:
    """A rate as the medians' key: 140 and 140.0 are one step."""
    return f"{float(rate):g}"


def _f(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def render(result: dict[str, Any]) -> str:
    """The Markdown report: per rate, one row per revision, each figure with its ratio to the first revision."""
    revisions: list[str] = result["revisions"]
    table = result["medians"]
    rates = ", ".join(_f(r) for r in result["rates"])
    named = ", ".join(f"{name} ({result['commits'][name]})" for name in revisions)
    lines = [
        "# Revisions side by side",
        "",
        f"Written by `credited bench-revisions` on {result['written']}: {result['rounds']} rounds of {rates} orders/s,"
        f" {_f(result['step_s'])} s each, every revision on a fresh broker and PostgreSQL in turn; medians over the"
        f" rounds, (x) the ratio to the first revision. Revisions: {named}.",
        "",
    ]
    for rate in result["rates"]:
        lines += [f"## {_f(rate)} orders/s asked", ""]
        lines.append("| revision | " + " | ".join(title for _, title in FIGURES) + " | exact |")
        lines.append("|---" * (len(FIGURES) + 2) + "|")
        first = table[revisions[0]].get(rate_key(rate), {})
        for name in revisions:
            row = table[name].get(rate_key(rate), {})
            cells = []
            for key, _ in FIGURES:
                value, base = row.get(key), first.get(key)
                ratio = f" ({value / base:.2f}x)" if name != revisions[0] and value is not None and base else ""
                cells.append(_f(value) + ratio)
            exact = "yes" if row.get("kept_exact") else "no"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {exact} |")
        lines += ["", "CPU ms per order by process (median):", ""]
        rows = [table[name].get(rate_key(rate), {}).get("cpu_ms_per_order", {}) for name in revisions]
        names = sorted({n for cpu in rows for n in cpu})
        lines.append("| revision | " + " | ".join(names) + " |")
        lines.append("|---" * (len(names) + 1) + "|")
        for name in revisions:
            cpu = table[name].get(rate_key(rate), {}).get("cpu_ms_per_order", {})
            lines.append(f"| {name} | " + " | ".join(_f(cpu.get(n)) for n in names) + " |")
        lines.append("")
    for name in revisions:
        for i, steps in enumerate(result["runs"][name]):
            for inexact in (s for s in steps if not s["kept_exact"]):
                how = ", ".join(f"{key} {_f(inexact.get(key))}" for key in EXACTNESS)
                lines.append(f"Round {i + 1} of {name} at {_f(inexact['rate'])}/s was not exact: {how}.")
    for lost in result.get("failed_rounds", []):
        lines.append(f"Round {lost['round']} of {lost['revision']} failed and is not counted: {lost['error']}.")
    lines.append(
        "'exact': in every round the step ended with every paid order settled, none credited twice, no request"
        " failed or went unanswered, and detection's precision and recall 1 (where it flagged or missed any)."
    )
    return "\n".join(lines) + "\n"


async def compare(options: RevisionOptions, written: str) -> dict[str, Any]:
    """Every revision, every round; the raw summaries, their medians and what the report needs."""
    trees: dict[str, Path] = {}
    runs: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in options.revisions}
    failed: list[dict[str, Any]] = []
    variants = {name: Variant.parse(name) for name in options.revisions}
    try:
        for i, name in enumerate(options.revisions):
            trees[name] = checkout(options.repo, variants[name].revision, options.run_dir / f"tree{i}")
        for r in range(options.rounds):
            for i, name in enumerate(options.revisions):
                log.warning("round %d of %d: %s", r + 1, options.rounds, name)
                run_dir = options.run_dir / f"round{r}-{i}"
                try:
                    runs[name].append(await one_round(trees[name], variants[name], options, run_dir))
                except Exception as exc:  # one round lost is named in the report, not the whole run
                    log.exception("round %d of %s failed; its logs are in %s", r + 1, name, run_dir)
                    failed.append({"round": r + 1, "revision": name, "error": repr(exc)[:300], "logs": str(run_dir)})
    finally:
        for tree in trees.values():
            remove(options.repo, tree)
    return {
        "written": written,
        "revisions": list(options.revisions),
        "commits": {name: commit_of(options.repo, variants[name].revision) for name in options.revisions},
        "rates": list(options.rates),
        "step_s": options.step_s,
        "rounds": options.rounds,
        "runs": runs,
        "failed_rounds": failed,
        "medians": medians(runs),
    }


__all__: Sequence[str] = ("RevisionOptions", "Variant", "compare", "medians", "render", "summary")
