"""The `credited` command."""

import asyncio
import logging
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
import uvloop
from rich.console import Console
from rich.text import Text

from credited import audit, dlq, keys
from credited.console import terminal

log = logging.getLogger(__name__)


def exited(name: str, tail: str) -> Text:
    """A service that exited, and the end of its log as written. Printed as rich markup, a log line lost its
    `[level]` and `[logger]` (read as tags) and a tail holding `[/...]` (a traceback's `list[/]`) stopped
    `credited up` with a MarkupError just as a service died."""
    return Text.assemble((f"{name} exited", "red"), f":\n{tail}")


app = typer.Typer(help="credited: paid-but-not-credited top-ups, caught and fixed.", no_args_is_help=True)

app.add_typer(keys.app, name="keys")
app.add_typer(dlq.app, name="dlq")
app.command("audit")(audit.audit)
app.command("order")(terminal.order)

RUN_DIR = Path(".credited")
KEYS = "dev-keys.json"
"""The development API key of `credited up` and `credited demo`, in RUN_DIR."""


@app.command()
def demo(
    orders: Annotated[int, typer.Option(min=1, help="How many orders the simulator places and pays.")] = 500,
    rate: Annotated[float, typer.Option(min=0.1, help="Orders per second.")] = 50.0,
    credit_loss: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of orders whose credit the ledger drops, to show them caught; 0 for none."
        ),
    ] = 0.03,
    threshold: Annotated[
        float,
        typer.Option(
            min=0.5,
            help="Seconds from payment until an uncredited order is overdue: short, so the demo shows them flagged.",
        ),
    ] = 5.0,
    duplicates: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of callbacks the provider sends twice.")
    ] = 0.1,
    callback_loss: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of WeChat Pay and Alipay notifications the local provider never sends, to show payments "
            "find those payments by asking it; 0 for none.",
        ),
    ] = 0.05,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object on the last line.")
    ] = False,
) -> None:
    """Run the whole stack with the simulator, show live progress, print the scored summary and stop."""
    from credited.demo import DemoOptions, StartupFailed, run_demo
    from harness.simulator.story import closing_lines

    logging.basicConfig(level=logging.WARNING)
    console = Console(stderr=as_json)
    options = DemoOptions(
        orders, rate, credit_loss, threshold, duplicates, RUN_DIR.resolve() / "demo", callback_loss=callback_loss
    )
    try:
        summary = uvloop.run(run_demo(options, console))  # the demo's client shares the cores: the cheaper loop
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("stopped; every process of the stack has exited")
        raise typer.Exit(130) from None
    except StartupFailed as exc:
        console.print(Text(str(exc), style="red"), soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    else:
        for key, value in summary.items():
            if not isinstance(value, dict):
                console.print(f"{key:>26}: {value}")
        console.print()
        for line in closing_lines(summary, credit_loss=credit_loss, threshold_s=threshold, callback_loss=callback_loss):
            console.print(line, soft_wrap=True, highlight=False)
    harms = ("credited_twice", "lost", "credited_and_refunded", "balance_mismatches")
    ok = summary["paid"] == summary["orders"] == orders and all(summary.get(harm, 0) == 0 for harm in harms)
    raise typer.Exit(0 if ok else 1)


@app.command()
def console(
    payments_url: Annotated[
        str | None, typer.Option(help="Payments' public URL (CREDITED_PAYMENTS_URL; default the local stack's).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (keep it local unless behind TLS).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8110,
) -> None:
    """The support console: search orders, see one order across the services, act on it, work the cases."""
    import uvicorn

    from credited.console.api import payments_url_from_environment
    from credited.console.app import build_app

    logging.basicConfig(level=logging.INFO)
    url = payments_url or payments_url_from_environment()
    Console().print(f"support console on http://{host}:{port} (payments at {url}); Ctrl-C stops it")
    uvicorn.run(build_app(url), host=host, port=port, log_level="warning")


@app.command()
def up(
    threshold: Annotated[float, typer.Option(min=0.5, help="Seconds from payment until overdue.")] = 120.0,
) -> None:
    """Start the stack without the simulator and run until Ctrl-C."""
    from credited.stack.local import LocalStack, StackConfig

    logging.basicConfig(level=logging.INFO)
    console = Console()
    run_dir = RUN_DIR.resolve()
    stack = LocalStack(StackConfig.from_environment(run_dir / "up", threshold_s=threshold, keys_path=run_dir / KEYS))
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        try:
            stack.start()
        except Exception as exc:  # start stopped what it had started: one line naming what failed, not a traceback
            from harness.simulator.story import startup_failure

            log.debug("the stack did not start", exc_info=True)
            console.print(Text(startup_failure(exc, stack.config.run_dir / "logs"), style="red"), soft_wrap=True)
            raise typer.Exit(2) from None
        console.print(f"broker {stack.bootstrap}  database {stack.database_url}")
        # What the runbooks' `credited dlq` and `credited keys` read, as the services do, and where `credited order`,
        # `audit` and `console` find this stack's payments (another CREDITED_PORT_BASE moves it): one line to paste.
        cli_env = f"KAFKA_BOOTSTRAP={stack.bootstrap} KAFKA_BROKER={stack.broker_kind}"
        cli_env += f" DATABASE_URL={stack.database_url} CREDITED_PAYMENTS_URL={stack.url('payments')}"
        console.print(f"for the credited CLI: export {cli_env}", soft_wrap=True)
        for name in ("payments", "ledger", "reconciler", "notifier"):
            url, metrics, log_path = stack.url(name), stack.metrics_url(name), stack.services[name].log_path
            console.print(f"{name:>10}: {url}  (metrics {metrics}, log {log_path})")
        console.print(
            f"API key with every scope (development): {stack.keys_path}, sent as `Authorization: Bearer <key>`"
        )
        console.print("Ctrl-C stops everything.")
        while not stopping:
            for name in stack.revive():
                console.print(f"[yellow]{name} stopped itself (exit 75) and was started again[/yellow]")
            for name, child in stack.services.items():
                if not child.alive():
                    console.print(exited(name, child.tail()))
                    stopping = True
            time.sleep(0.5)
    finally:
        console.print("stopping ...")
        stack.stop()


@app.command("bench-reconciler")
def bench_reconciler(
    orders: Annotated[int, typer.Option(min=100, help="Orders in the replayed event log.")] = 20_000,
    out: Annotated[Path, typer.Option(help="Where the JSON report goes.")] = Path("artifacts/bench/reconciler.json"),
    worker: Annotated[bool, typer.Option(help="Also run the workers, faust's ceiling and Bytewax on a broker.")] = True,
    live_rate: Annotated[float, typer.Option(min=1.0, help="Orders/s of the live detection run.")] = 2000.0,
    live_s: Annotated[float, typer.Option(min=1.0, help="Seconds of the live detection run.")] = 10.0,
    report: Annotated[Path, typer.Option(help="The Markdown report whose reconciler section it replaces.")] = Path(
        "docs/benchmarks.md"
    ),
    table_size: Annotated[
        Path | None, typer.Option(help="A JSON report of `python -m harness.bench.table_size` to include.")
    ] = None,
) -> None:
    """Reconciler throughput on a replayed event log, side by side in one run: the engine alone, faust's own
    ceiling (a bare agent), the reconciler with one and two worker processes, Bytewax; then live detection
    at `--live-rate` (KAFKA_BOOTSTRAP with KAFKA_BROKER, or the embedded Tansu)."""
    import os

    from credited.stack.embedded import EmbeddedKafka
    from credited.stack.processes import free_port
    from harness.bench import reconciler_report
    from harness.bench.reconciler import main as bench_main

    logging.basicConfig(level=logging.WARNING)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    kafka = None
    if worker and not bootstrap:
        kafka = EmbeddedKafka(free_port(), out.parent / "logs")
        kafka.start()
        bootstrap = kafka.bootstrap
    broker = os.environ.get("KAFKA_BROKER", "apache") if kafka is None else "tansu"
    try:
        figures = bench_main(orders, out, bootstrap if worker else None, broker, live_rate, live_s)
    finally:
        if kafka is not None:
            kafka.stop()
    sizes = orjson.loads(table_size.read_bytes()) if table_size is not None else None
    reconciler_report.write(report, figures, sizes, datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    sys.stdout.write(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() + "\n")


@app.command()
def bench(
    quick: Annotated[
        bool, typer.Option(help="One short rate step and tiny logs: checks the machinery, not the figures.")
    ] = False,
    report: Annotated[Path, typer.Option(help="The Markdown report.")] = Path("docs/benchmarks.md"),
    plots: Annotated[Path, typer.Option(help="Where the PNG plots and the JSON figures go.")] = Path("docs/benchmarks"),
    run_dir: Annotated[Path, typer.Option(help="Logs, profiles and data of the run.")] = RUN_DIR / "bench",
    broker: Annotated[
        str, typer.Option(help="apache (scripts/apache-kafka; the embedded Tansu if it cannot start) or embedded.")
    ] = "apache",
    rates: Annotated[str, typer.Option(help="Comma-separated orders/s of the rate steps, rising.")] = "",
    step_s: Annotated[float, typer.Option(min=1.0, help="Seconds of load per rate step.")] = 15.0,
) -> None:
    """The whole pipeline at rising rates until pay-to-credit p99 reaches 1 s, each service alone, the
    Bytewax peer and the periodic-SQL baseline on the same log, and a py-spy profile; writes the JSON
    figures, the Markdown report and its plots."""
    import dataclasses
    import os

    from harness.bench.cpu import baseline_of
    from harness.bench.report import write_report
    from harness.bench.run import BenchOptions, run_bench

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    options = BenchOptions.quick_run(run_dir.resolve(), broker) if quick else BenchOptions(run_dir.resolve(), broker)
    previous = plots / "benchmarks.json"  # the report this run replaces: its figures are the "before"
    baseline = baseline_of(orjson.loads(previous.read_bytes())) if previous.exists() else None
    if rates or step_s != 15.0:
        chosen = tuple(float(r) for r in rates.split(",")) if rates else options.pipeline.rates
        pipeline = dataclasses.replace(options.pipeline, rates=chosen, step_s=step_s)
        options = dataclasses.replace(options, pipeline=pipeline)
    figures = uvloop.run(run_bench(options))  # the load generator shares the cores: the cheaper loop
    figures["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if baseline is not None:
        figures["baseline"] = baseline
    write_report(figures, plots / "benchmarks.json", report, plots)
    console = Console()
    console.print(f"report {report}, plots and figures in {plots}/ ({figures['elapsed_s']:.0f} s)")


@app.command("bench-revisions")
def bench_revisions(
    rev: Annotated[
        list[str],
        typer.Option(
            help="A git revision of the services; give two or more, the first is the base. REV:name=value,... runs"
            " it in another shape: payments_processes, reconciler_workers, ledger_payments_consumers (copies), or an"
            " UPPER_CASE variable for every service."
        ),
    ],
    rates: Annotated[str, typer.Option(help="Comma-separated orders/s of the fixed rate steps.")] = "100,140",
    step_s: Annotated[float, typer.Option(min=1.0, help="Seconds of load per rate step.")] = 15.0,
    rounds: Annotated[int, typer.Option(min=1, help="Times every revision runs, in turn.")] = 2,
    out: Annotated[Path, typer.Option(help="The Markdown report; its JSON beside it.")] = Path(
        "artifacts/bench/revisions.md"
    ),
    run_dir: Annotated[Path, typer.Option(help="Worktrees, logs and data of the run.")] = RUN_DIR / "revisions",
    broker: Annotated[str, typer.Option(help="apache (scripts/apache-kafka) or embedded.")] = "apache",
) -> None:
    """The whole pipeline at fixed rates on two or more revisions of the services, side by side in one run:
    every round runs each on a fresh broker and PostgreSQL, in turn; medians per revision and rate."""
    from harness.bench.revisions import RevisionOptions, Variant, compare, render

    if len(rev) < 2:
        raise typer.BadParameter("give at least two revisions to compare", param_hint="--rev")
    for text in rev:
        try:
            Variant.parse(text)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--rev") from exc
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    options = RevisionOptions(
        run_dir=run_dir.resolve(),
        revisions=tuple(rev),
        rates=tuple(float(r) for r in rates.split(",")),
        step_s=step_s,
        rounds=rounds,
        broker=broker,
    )
    written = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    result = uvloop.run(compare(options, written))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    out.write_text(render(result))
    Console().print(f"report {out}, figures {out.with_suffix('.json')}")


@app.command("bench-hop")
def bench_hop(
    variants: Annotated[
        str,
        typer.Option(help="Comma-separated: aiokafka or confluent, with :commit=S or :pace=MS; the first is the base."),
    ] = "aiokafka,confluent",
    rates: Annotated[str, typer.Option(help="Comma-separated records/s fed to the hop.")] = "100,400,1500",
    seconds: Annotated[float, typer.Option(min=1.0, help="Seconds timed per step.")] = 20.0,
    rounds: Annotated[int, typer.Option(min=1, help="Times every variant runs at every rate, in turn.")] = 3,
    out: Annotated[Path, typer.Option(help="The Markdown report; its JSON beside it.")] = Path(
        "artifacts/bench/hop.md"
    ),
    run_dir: Annotated[Path, typer.Option(help="The broker's data and log.")] = RUN_DIR / "hop",
) -> None:
    """What one consumer->producer Kafka hop costs per record, by client and cycle shape, on Apache Kafka
    (scripts/apache-kafka): the hop's and the broker's CPU, records per poll, latency."""
    from harness.bench.hop import HopOptions, Variant, measure, render, summarise
    from harness.bench.infra import apache_kafka

    try:
        chosen = tuple(Variant.parse(v) for v in variants.split(","))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--variants") from exc
    console = Console()
    with apache_kafka(run_dir.resolve()) as (bootstrap, broker_pid):
        options = HopOptions(bootstrap, broker_pid, chosen, tuple(float(r) for r in rates.split(",")), rounds, seconds)
        rows = measure(options, progress=console.print)
    summary = summarise(rows)
    written = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_bytes(orjson.dumps({"rows": rows, "summary": summary}, option=orjson.OPT_INDENT_2))
    out.write_text(render(summary, written=written, broker="Apache Kafka"))
    console.print(f"report {out}, figures {out.with_suffix('.json')}")


@app.command()
def chaos(
    schedule: Annotated[
        str,
        typer.Option(
            help="full (make chaos), ci (the short one CI runs), baseline:<kind> (one kind alone: kill, "
            "broker_restart, postgres_restart, read_only, disk_full), or a JSON file of timed faults."
        ),
    ] = "full",
    orders: Annotated[int, typer.Option(min=0, help="Orders of traffic; 0 keeps the schedule's.")] = 0,
    rate: Annotated[float, typer.Option(min=0.0, help="Orders per second; 0 keeps the schedule's.")] = 0.0,
    only: Annotated[str, typer.Option(help="Comma-separated fault kinds to keep (a baseline per kind).")] = "",
    threshold: Annotated[float, typer.Option(min=0.5, help="Seconds from payment until overdue.")] = 10.0,
    settle: Annotated[float, typer.Option(min=1.0, help="Seconds to wait for every paid order to settle.")] = 300.0,
    out: Annotated[Path, typer.Option(help="The JSON report.")] = Path("artifacts/chaos/chaos.json"),
    run_dir: Annotated[Path, typer.Option(help="Logs and data of the run.")] = RUN_DIR / "chaos",
) -> None:
    """Traffic through the stack on Apache Kafka while faults are injected, then every order checked: credited
    or refunded exactly once, never both, the user told once per status, wallets equal to their credits."""
    import dataclasses
    import shutil

    from harness.chaos import schedule as schedules
    from harness.chaos.report import print_report, write_json
    from harness.chaos.run import ChaosOptions, run_chaos

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    plan = {"full": schedules.full, "ci": schedules.ci}.get(schedule)
    if schedule.startswith("baseline:"):
        kind = schedules.FaultKind(schedule.split(":", 1)[1])
        chosen = schedules.baseline(kind, orders or 1500, rate or 15.0)
    elif plan is not None:  # the named schedules spread their faults over the traffic they are given
        default = plan()
        chosen = plan(orders or default.orders, rate or default.rate)
    else:
        chosen = schedules.Schedule.load(Path(schedule))
        chosen = dataclasses.replace(chosen, orders=orders or chosen.orders, rate=rate or chosen.rate)
    if only:
        chosen = chosen.only({schedules.FaultKind(k.strip()) for k in only.split(",")})
    shutil.rmtree(run_dir, ignore_errors=True)
    options = ChaosOptions(chosen, run_dir.resolve(), threshold_s=threshold, settle_s=settle)
    result = asyncio.run(run_chaos(options))
    write_json(result, out)
    console = Console(width=max(Console().width, 160))
    print_report(result, console)
    console.print(f"report {out}, logs in {run_dir}/logs")
    raise typer.Exit(0 if result["ok"] else 1)
