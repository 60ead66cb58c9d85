"""The ledger benchmark runs on the real PostgreSQL and its books come out right (figures are not asserted)."""

from pathlib import Path

import pytest

from ledger.bench import BenchOptions, markdown, run_bench


@pytest.mark.parametrize("consumers", [1, 2])
async def test_the_ledger_benchmark_credits_every_order_once_and_reports_its_figures(
    database_url: str, tmp_path: Path, consumers: int
) -> None:
    options = BenchOptions(credits=300, batch=50, consumers=consumers, users=40, out=tmp_path / "l.json")
    report = await run_bench(database_url, options)
    assert report["books"]["ok"] and report["books"]["entries_ok"]
    assert report["messages"] == 330 and report["consumers"] == consumers
    if consumers == 1:
        assert report["batches"] == 7
    assert report["credits_per_s"] > 0 and report["batch_p50_ms"] > 0
    assert "| credits/s |" in markdown(report)
