"""The reconciler's own section of docs/benchmarks.md, from `credited bench-reconciler` (and, when it was run,
`python -m harness.bench.table_size`): catch-up side by side with faust's ceiling and Bytewax, live
detection at 2,000 orders/s, and what a table of settled orders costs a worker.

`make bench` measures the whole pipeline and rewrites docs/benchmarks.md; this section lives between two
markers in that file, so each command replaces only its own part and keeps the other's."""

from pathlib import Path
from typing import Any

from harness.bench.report import _f, _hot, _table

START = "<!-- credited bench-reconciler: start -->"
END = "<!-- credited bench-reconciler: end -->"

PER_WORKER_TARGET = 10_000
TWO_WORKERS_TARGET = 18_000
PRODUCT_GOAL_PER_CORE = 50_000
LIVE_P99_TARGET_S = 1.0


def section(report: dict[str, Any], table_size: dict[str, Any] | None, when: str) -> str:
    """The Markdown of the section, markers included."""
    lines = [START, "## The reconciler alone: catch-up, live detection at 2,000 orders/s, table size", ""]
    lines += [
        f"Written by `credited bench-reconciler` on {when} ({report['machine']['cores']} cores; 1-minute load"
        f" average {_f(report['load_average_at_start'][0])} at its start, {_f(report['load_average_at_end'][0])}"
        " at its end). Rerun with `credited bench-reconciler` (it starts its own broker, or uses KAFKA_BOOTSTRAP"
        " and KAFKA_BROKER).",
        "",
    ]
    lines += _catch_up(report)
    lines += _live(report.get("live"))
    lines += _table_size(table_size)
    return "\n".join([*lines, END]) + "\n"


def _catch_up(report: dict[str, Any]) -> list[str]:
    engine_rate = report["engine"]["events_per_s"]
    c = report.get("catch_up")
    if c is None:
        return [f"Engine alone (no Kafka): {_f(engine_rate)} events/s. No broker: no catch-up run.", ""]
    median = c["median_events_per_s"]
    steady = c["median_steady_events_per_s"]
    rounds = len(c["runs"]["reconciler"])
    ceiling = median.get("faust_ceiling")
    rows = [
        ["faust's own ceiling (a bare agent: decode, one table row)", median.get("faust_ceiling"), 1.0,
         steady.get("faust_ceiling")],
        ["reconciler, 1 worker process", median.get("reconciler"), _ratio(median.get("reconciler"), ceiling),
         steady.get("reconciler")],
        [f"reconciler, {c['workers']} worker processes", median.get("reconciler_workers"),
         _ratio(median.get("reconciler_workers"), ceiling), steady.get("reconciler_workers")],
        ["Bytewax (one worker, in memory)", median.get("bytewax"), _ratio(median.get("bytewax"), ceiling),
         steady.get("bytewax")],
        ["the pure engine (no Kafka)", engine_rate, _ratio(engine_rate, ceiling), None],
    ]  # fmt: skip
    one, two = median.get("reconciler"), median.get("reconciler_workers")
    lines = [
        f"### Catch-up on a replayed log: {_f(c['events'])} events ({_f(c['orders'])} orders, duplicates included)",
        "",
        f"Each one reads its own copy of the same log from the start, every deadline already passed; they take"
        f" turns, {rounds} rounds, and the medians are given (every run is in the JSON).",
        "",
        *_table(["", "events/s (median)", "x faust's ceiling", "steady events/s (10th to 90th hundredth)"], rows),
        f"Against the issue's targets: one worker {_f(one)} of {_f(PER_WORKER_TARGET)} events/s"
        f" ({_f(_ratio(one, PER_WORKER_TARGET))}), {c['workers']} workers {_f(two)} of {_f(TWO_WORKERS_TARGET)}"
        f" ({_f(_ratio(two, TWO_WORKERS_TARGET))}); the product goal is {_f(PRODUCT_GOAL_PER_CORE)} per core."
        f" What stands between: faust itself. Its bare agent, which does nothing but decode each record and write"
        f" one table row, makes {_f(ceiling)} events/s here, so no faust worker can reach the targets; the engine"
        f" alone makes {_f(engine_rate)} ({_f(_ratio(engine_rate, ceiling))}"
        " times faust's ceiling). Reaching 50,000 per core means leaving faust's per-record stream and table"
        " machinery (a plain consumer feeding the engine in batches, as Bytewax's figure suggests), which issue 14"
        " rules out: the reconciler stays a faust-streaming app.",
        "",
    ]
    profile = c["runs"]["reconciler"][0].get("profile") if c["runs"]["reconciler"] else None
    if profile:
        lines += [
            "Where the one worker's time goes while it catches up (py-spy at 100 Hz, first round):",
            "",
            *_hot("reconciler worker (catching up)", profile),
        ]
    return lines


def _live(live: dict[str, Any] | None) -> list[str]:
    if live is None:
        return []
    ours = live["reconciler"]
    p99 = ours.get("detection_p99_s")
    verdict = "within" if p99 is not None and p99 <= LIVE_P99_TARGET_S else "NOT within"
    late = live["credits_late_on_the_broker"]
    header = ["dropped", "flagged", "precision", "recall", "false flags (broker clock)", "detection p50 s", "p99 s"]
    row = [ours["dropped"], ours["flagged"], ours["precision"], ours["recall"], live["false_flags"]]
    row += [ours["detection_p50_s"], p99]
    return [
        f"### Live detection at {_f(live['rate_per_s'])} orders/s",
        "",
        f"{_f(live['orders'])} orders ({_f(live['events'])} events) published at {_f(live['rate_per_s'])}/s at their"
        f" event time (in {_f(live['published_in_s'])} s), some credits dropped on purpose, threshold"
        f" {_f(live['threshold_s'])} s, {live['workers']} worker processes sharing the partitions; 1-minute load"
        f" average {_f(live['load_average'])} at the start.",
        "",
        *_table(header, [row]),
        f"Detection p99 {_f(p99)} s after the deadline: {verdict} the 1 s target. The workers had applied every"
        f" event {_f(live['caught_up_s_after_the_last_deadline'])} s after the last deadline; credits that reached"
        f" the broker after their deadline (the publisher behind its own log): {_f(late)}.",
        "",
    ]


def _table_size(table_size: dict[str, Any] | None) -> list[str]:
    if table_size is None:
        return [
            "### Table of settled orders",
            "",
            "Not measured in this run (`python -m harness.bench.table_size --orders 1000000 --out FILE"
            " --before-src DIR`, then `credited bench-reconciler --table-size FILE`).",
            "",
        ]
    rows = []
    for v in table_size["variants"]:
        first, nxt = v["first"], v.get("next", {})
        rows.append([
            v["variant"], v["changelog_mib"], v.get("load"), first.get("taken_over_s"), first.get("rss_mib"),
            nxt.get("taken_over_s"), nxt.get("rss_mib"), _failure(first, nxt),
        ])  # fmt: skip
    days = table_size["retention_s"] / 86400
    header = ["variant", "changelog MiB", "load at start", "take-over s", "RSS MiB", "next take-over s"]
    header += ["next RSS MiB", "did not finish"]
    return [
        f"### A table of {_f(table_size['orders'])} settled orders",
        "",
        "One worker takes every partition over from a changelog of that many settled orders, written as a worker"
        " leaves them: the time from its start until every partition is taken over with its table restored, and"
        f" its resident memory then. Before: the states as the reconciler kept them before issue 14 (a decoded"
        f" JSON dict per order, its own code). After, kept: settled within the retention ({_f(days)} days), so"
        " the worker keeps them. After, expired: settled longer ago; the first worker drops them (a tombstone"
        " each) and a second one takes over after it.",
        "",
        *_table(header, rows),
        "The 1-minute load average at each variant's start is given: the variants ran one after the other on a"
        " shared machine, so take-over times compare only at similar load (memory depends on load much less)."
        " A take-over that did not finish within 30 minutes has no figures and its worker's last log line.",
        "",
        *[f"Runs: {note}" for note in table_size.get("runs", [])],
        "",
    ]


def _failure(first: dict[str, Any], nxt: dict[str, Any]) -> str:
    error = str(first.get("error") or nxt.get("error") or "")
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    return f"`{lines[-1][-100:]}`" if lines else ""


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def splice(document: str, new_section: str) -> str:
    """`document` with its reconciler section replaced by `new_section` (appended when it has none)."""
    start, end = document.find(START), document.find(END)
    if start == -1 or end == -1:
        return document.rstrip("\n") + "\n\n" + new_section
    return document[:start] + new_section + document[end + len(END) :].lstrip("\n")


def kept_section(document: str) -> str | None:
    """The reconciler section of `document`, markers included, so a rewrite of the rest can keep it."""
    start, end = document.find(START), document.find(END)
    return None if start == -1 or end == -1 else document[start : end + len(END)] + "\n"


def write(report_path: Path, report: dict[str, Any], table_size: dict[str, Any] | None, when: str) -> None:
    existing = report_path.read_text() if report_path.exists() else "# Benchmarks\n"
    report_path.write_text(splice(existing, section(report, table_size, when)))


def main() -> None:
    """Write the section again from the JSON reports a run left (when the Markdown is all that changed)."""
    import argparse
    from datetime import UTC, datetime

    import orjson

    parser = argparse.ArgumentParser(prog="python -m harness.bench.reconciler_report", description=main.__doc__)
    parser.add_argument("figures", type=Path, help="the JSON of credited bench-reconciler")
    parser.add_argument("--table-size", type=Path, help="the JSON of python -m harness.bench.table_size")
    parser.add_argument("--report", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args()
    sizes = orjson.loads(args.table_size.read_bytes()) if args.table_size else None
    when = datetime.fromtimestamp(args.figures.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
    write(args.report, orjson.loads(args.figures.read_bytes()), sizes, when)


if __name__ == "__main__":
    main()
