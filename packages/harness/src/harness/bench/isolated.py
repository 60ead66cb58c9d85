"""Each service alone: payments callbacks/s (payments_alone), notifier deliveries/s, reconciler events/s, ledger
credits/s.

Each runs on the shared broker and PostgreSQL with its own topic prefix and database schema.
"""

import asyncio
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from harness.bench.payments_alone import bench_payments
from harness.bench.reconciler import bench_engine


async def bench_notifier(bootstrap: str, database_url: str, broker: str, out: Path, quick: bool) -> dict[str, Any]:
    """The notifier's own benchmark (python -m notifier.bench): steady latency and burst deliveries/s."""
    from notifier.bench import BenchOptions, Stack, run_bench

    options = (
        BenchOptions(orders=100, rate=100, burst=100, users=20, out=out)
        if quick
        else BenchOptions(orders=2000, rate=200, burst=3000, users=300, out=out)
    )
    return await run_bench(Stack(bootstrap, broker, database_url), options, out.parent / "notifier-logs")


def bench_reconciler_engine(orders: int) -> dict[str, Any]:
    """The reconciler's engine alone on the replayed log: the ceiling of one core without Kafka."""
    return bench_engine(orders)


async def bench_ledger(database_url: str, out: Path, quick: bool) -> dict[str, Any]:
    """The ledger's own benchmark (python -m ledger.bench) on the shared PostgreSQL, as a process, when the
    module exists; else a labelled gap in the report."""
    if not _has("ledger.bench"):
        return {"status": "not measured: no ledger benchmark module (ledger.bench) yet"}
    argv = [sys.executable, "-m", "ledger.bench", "--credits", "500" if quick else "20000", "--out", str(out)]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0 or not await asyncio.to_thread(out.exists):
        return {"status": f"python -m ledger.bench failed: {err.decode(errors='replace')[-300:]}"}
    figures: dict[str, Any] = orjson.loads(await asyncio.to_thread(out.read_bytes))
    return figures


def _has(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


__all__ = ["bench_ledger", "bench_notifier", "bench_payments", "bench_reconciler_engine"]
