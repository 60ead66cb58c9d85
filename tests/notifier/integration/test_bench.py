"""The notifier benchmark runs end to end on a small load and writes its report (figures are not judged here)."""

import json
from pathlib import Path

from notifier.bench import BenchOptions, Stack, run_bench
from tests.conftest import Broker


async def test_the_benchmark_times_every_status_change_to_its_push_and_writes_a_report(
    broker: Broker, database_url: str, tmp_path: Path
) -> None:
    stack = Stack(broker.bootstrap, "tansu" if broker.kind == "embedded" else "apache", database_url)
    options = BenchOptions(orders=40, rate=100.0, burst=40, users=5, out=tmp_path / "notifier.json")
    report = await run_bench(stack, options, tmp_path / "logs")
    assert json.loads(options.out.read_text()) == report
    assert report["latency"]["count"] == 40
    assert report["throughput"]["deliveries"] == 40
    assert {"p50_ms", "p99_ms"} <= report["latency"].keys() and report["throughput"]["deliveries_per_s"] > 0
    assert {"consumed_p50_ms", "settled_p99_ms"} <= report["latency"]["breakdown"].keys()
