"""`credited bench --quick` on the real broker and PostgreSQL: the machinery runs end to end and writes
its JSON figures, Markdown report and plots. Figures are never asserted, only that they are there."""

import asyncio
from pathlib import Path

import orjson
import pytest

from harness.bench.report import write_report
from harness.bench.run import BenchOptions, run_bench
from tests.conftest import Broker

STEP_FIELDS = {
    "orders_per_s",
    "pay_to_credit_p50_s",
    "pay_to_credit_p99_s",
    "status_to_push_p50_ms",
    "status_to_push_p99_ms",
    "credit_to_push_p50_ms",
    "credit_to_push_p99_ms",
    "detection_latency_p50_s",
    "detection_latency_p99_s",
    "detection_precision",
    "detection_recall",
    "processes",
}


@pytest.mark.long
def test_a_quick_bench_writes_the_figures_the_report_and_its_plots(broker: Broker, tmp_path: Path) -> None:
    kind = "tansu" if broker.kind == "embedded" else "apache"
    # its own embedded PostgreSQL, as `make bench` has: started with pg_stat_statements, which the tests' has not
    options = BenchOptions.quick_run(tmp_path / "run", kind, broker.bootstrap)

    figures = asyncio.run(run_bench(options))
    figures["load_average_at_end"] = [0.0, 0.0, 0.0]
    write_report(figures, tmp_path / "out" / "benchmarks.json", tmp_path / "benchmarks.md", tmp_path / "out")

    written = orjson.loads((tmp_path / "out" / "benchmarks.json").read_bytes())
    step = written["pipeline"]["steps"][0]
    assert set(step) >= STEP_FIELDS
    assert set(step["processes"]) >= {"payments", "ledger", "reconciler", "notifier", "load generator"}
    assert all("cpu_s" in usage and "peak_rss_mib" in usage for usage in step["processes"].values())
    asked = step["postgres_statements"]
    assert asked["statements_per_order"] > 0 and asked["commits_per_order"] > 0 and asked["top"]
    assert asked["top_by_time"] and all(t["ms_per_order"] > 0 for t in asked["top_by_time"])
    assert {"reconciler_engine", "reconciler_worker", "payments", "notifier", "ledger"} <= set(written["isolated"])
    for phase in ("catch_up", "live"):
        assert {"reconciler", "bytewax", "sql"} <= set(written["peers"][phase])
        assert all("precision" in written["peers"][phase][name] for name in ("reconciler", "bytewax", "sql"))
    assert set(written["peers"]["ratios"]) == {"bytewax", "sql"}
    profiled = {"reconciler", "ledger", "payments", "notifier", "load generator"}
    assert set(written["pipeline"]["profile"]["processes"]) == profiled
    assert {"nproc", "memory_gib", "cpu_model", "python", "broker"} <= set(written["machine"])
    assert {"commit", "uncommitted"} <= set(written["source"])
    report = (tmp_path / "benchmarks.md").read_text()
    headings = (
        "## Against the targets",
        "## PostgreSQL per order",
        "## Side by side",
        "## Profile",
        "## Next bottleneck",
    )
    for heading in headings:
        assert heading in report
    assert "The statements that took the most execution time" in report
    for plot in ("pipeline.png", "cpu.png", "peers.png"):
        assert (tmp_path / "out" / plot).stat().st_size > 0
        assert f"out/{plot}" in report
