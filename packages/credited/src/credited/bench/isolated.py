"""Each service alone: payments callbacks/s, notifier deliveries/s, reconciler events/s, ledger credits/s.

Each runs on the shared broker and PostgreSQL with its own topic prefix and database schema.
"""

import asyncio
import importlib.util
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil  # type: ignore[import-untyped]

from credited.bench.reconciler import bench_engine
from credited.stack.local import LocalStack, StackConfig
from credited.stack.processes import free_port
from servicekit.signatures import sign


async def _burst(
    client: httpx.AsyncClient, requests: list[dict[str, Any]], concurrency: int
) -> tuple[float, list[httpx.Response]]:
    """Send every request with `concurrency` in flight; the seconds taken and the responses."""
    gate = asyncio.Semaphore(concurrency)

    async def one(request: dict[str, Any]) -> httpx.Response:
        async with gate:
            return await client.post(**request)

    started = time.perf_counter()
    responses = await asyncio.gather(*(one(r) for r in requests))
    return time.perf_counter() - started, responses


def _cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _failed(responses: list[httpx.Response]) -> int:
    return sum(r.status_code not in (200, 201) for r in responses)


def _callback(url: str, secret: str, order_id: str) -> dict[str, Any]:
    body = orjson.dumps(
        {
            "order_id": order_id,
            "provider_txn_id": f"bench-{uuid.uuid4().hex[:16]}",
            "status": "succeeded",
            "amount": 600,
            "currency": "CNY",
            "paid_at": datetime.now(UTC).isoformat(),
        }
    )
    headers = {"content-type": "application/json", "x-signature": sign(secret, body, int(time.time()))}
    return {"url": f"{url}/v1/psp/sim/callbacks", "content": body, "headers": headers}


async def bench_payments(
    bootstrap: str, database_url: str, broker: str, run_dir: Path, callbacks: int, concurrency: int = 64
) -> dict[str, Any]:
    """payments alone: `callbacks` orders placed, then one signed callback for each as a burst."""
    tag = f"benchpay{uuid.uuid4().hex[:6]}"
    config = StackConfig(
        run_dir=run_dir / tag,
        kafka_bootstrap=bootstrap,
        database_url=database_url,
        kafka_broker=broker,
        ports={"payments": free_port()},
        topic_prefix=f"{tag}.",
        db_schema_prefix=f"{tag}_",
        log_level="WARNING",
    )
    stack = LocalStack(config)
    stack.start_service("payments")
    try:
        await asyncio.to_thread(stack.wait_healthy, "payments")
        url = stack.url("payments")
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            orders = [
                {
                    "url": f"{url}/v1/orders",
                    "json": {"user_id": f"u{i % 500}", "amount": 600, "currency": "CNY", "channel": "card"},
                    "headers": {"Idempotency-Key": f"{tag}-{i}"},
                }
                for i in range(callbacks)
            ]
            order_s, placed = await _burst(client, orders, concurrency)
            ids = [r.json()["order_id"] for r in placed if r.status_code in (200, 201)]
            calls = [_callback(url, config.psp_secret, oid) for oid in ids]
            cpu_before = _cpu_s(stack.services["payments"].pid)
            callback_s, answered = await _burst(client, calls, concurrency)
            callback_cores = (_cpu_s(stack.services["payments"].pid) - cpu_before) / callback_s
    finally:
        stack.stop()
    return {
        "orders": callbacks,
        "concurrency": concurrency,
        "orders_per_s": round(callbacks / order_s, 1),
        "order_failures": _failed(placed),
        "callbacks_per_s": round(len(ids) / callback_s, 1),
        "callback_failures": _failed(answered),
        "payments_cores_during_callbacks": round(callback_cores, 2),
    }


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
