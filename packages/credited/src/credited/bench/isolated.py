"""Each service alone: payments callbacks/s, notifier deliveries/s, reconciler events/s, ledger credits/s.

Each runs on the shared broker and PostgreSQL with its own topic prefix and database schema.
"""

import asyncio
import contextlib
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

from credited.bench import wrk
from credited.bench.reconciler import bench_engine
from credited.stack.local import PAYMENTS_PROCESSES, LocalStack, StackConfig
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


def _tree_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds of a process and each of its descendants (payments' extra HTTP processes), by pid."""
    out = {}
    root = psutil.Process(pid)
    for proc in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            out[proc.pid] = _cpu_s(proc.pid)
    return out


def _cpu_since(pid: int, before: dict[int, float]) -> tuple[float, int]:
    """CPU seconds the process tree used since `before`, and how many processes it has."""
    now = _tree_cpu_s(pid)
    return sum(cpu - before.get(p, 0.0) for p, cpu in now.items()), len(now)


def _payments_stack(bootstrap: str, database_url: str, broker: str, run_dir: Path, processes: int) -> LocalStack:
    tag = f"benchpay{uuid.uuid4().hex[:6]}"
    return LocalStack(
        StackConfig(
            run_dir=run_dir / tag,
            kafka_bootstrap=bootstrap,
            database_url=database_url,
            kafka_broker=broker,
            ports={"payments": free_port()},
            topic_prefix=f"{tag}.",
            db_schema_prefix=f"{tag}_",
            log_level="WARNING",
            payments_processes=processes,
        )
    )


async def bench_payments(
    bootstrap: str,
    database_url: str,
    broker: str,
    run_dir: Path,
    callbacks: int,
    concurrency: int = 64,
    processes: int = PAYMENTS_PROCESSES,
) -> dict[str, Any]:
    """payments alone: `callbacks` orders placed as fast as they are answered, then one signed callback for
    each (signed before the timed phase); with wrk when it is installed, else from Python (httpx)."""
    stack = _payments_stack(bootstrap, database_url, broker, run_dir, processes)
    stack.start_service("payments")
    try:
        await asyncio.to_thread(stack.wait_healthy, "payments")
        pid = stack.services["payments"].pid
        if wrk.available():
            figures = await _payments_with_wrk(stack, pid, callbacks, concurrency)
        else:
            figures = await _payments_with_httpx(stack, pid, callbacks, concurrency)
    finally:
        stack.stop()
    return {"orders": callbacks, "concurrency": concurrency, **figures}


async def _payments_with_wrk(stack: LocalStack, pid: int, orders: int, concurrency: int) -> dict[str, Any]:
    url, secret, out = stack.url("payments"), stack.config.psp_secret, stack.config.run_dir / "wrk"
    run_id = uuid.uuid4().hex[:8]

    def job(mode: str, pay_file: Path | None = None) -> wrk.WrkJob:
        return wrk.WrkJob(
            url, mode, out / mode, orders, secret, run_id, users=max(1, orders // 5), connections=concurrency,
            pay_file=pay_file,
        )  # fmt: skip

    placing = job("orders")
    cpu = _tree_cpu_s(pid)
    placed = await wrk.run(placing)
    order_cpu, _ = _cpu_since(pid, cpu)
    pay_file = out / "pay.tsv"
    rows = [r for r in wrk.lines(placing) if r[0] == "O"]
    pay_file.write_text("".join(f"{r[1]}\t{r[3]}\n" for r in rows))
    paying = job("callbacks", pay_file)
    cpu = _tree_cpu_s(pid)
    paid = await wrk.run(paying)
    callback_cpu, count = _cpu_since(pid, cpu)
    answers = [r for r in wrk.lines(paying) if r[0] in ("R", "E")]
    return {
        "generator": "wrk",
        "payments_processes": count,
        "orders_per_s": round(len(rows) / placed.duration_s, 1),
        "order_failures": orders - len(rows),
        "payments_cpu_ms_per_order": round(order_cpu / max(1, len(rows)) * 1000, 3),
        "callbacks_per_s": round(len(rows) / paid.duration_s, 1),
        "callback_failures": sum(1 for r in answers if r[0] == "E" or r[2] != "200") + len(rows) - len(answers),
        "payments_cores_during_callbacks": round(callback_cpu / paid.duration_s, 2),
        "payments_cpu_ms_per_callback": round(callback_cpu / max(1, len(rows)) * 1000, 3),
        "generator_cores_during_callbacks": round(paid.cpu_s / paid.duration_s, 2),
        "client_request_during_callbacks": paid.client_request,
    }


async def _payments_with_httpx(stack: LocalStack, pid: int, callbacks: int, concurrency: int) -> dict[str, Any]:
    url = stack.url("payments")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        orders = [
            {
                "url": f"{url}/v1/orders",
                "json": {"user_id": f"u{i % 500}", "amount": 600, "currency": "CNY", "channel": "card"},
                "headers": {"Idempotency-Key": f"{stack.config.topic_prefix}{i}"},
            }
            for i in range(callbacks)
        ]
        cpu = _tree_cpu_s(pid)
        order_s, placed = await _burst(client, orders, concurrency)
        order_cpu, _ = _cpu_since(pid, cpu)
        ids = [r.json()["order_id"] for r in placed if r.status_code in (200, 201)]
        calls = [_callback(url, stack.config.psp_secret, oid) for oid in ids]
        cpu = _tree_cpu_s(pid)
        callback_s, answered = await _burst(client, calls, concurrency)
        callback_cpu, count = _cpu_since(pid, cpu)
    return {
        "generator": "python (httpx): wrk is not installed",
        "payments_processes": count,
        "orders_per_s": round(callbacks / order_s, 1),
        "order_failures": _failed(placed),
        "payments_cpu_ms_per_order": round(order_cpu / max(1, len(ids)) * 1000, 3),
        "callbacks_per_s": round(len(ids) / callback_s, 1),
        "callback_failures": _failed(answered),
        "payments_cores_during_callbacks": round(callback_cpu / callback_s, 2),
        "payments_cpu_ms_per_callback": round(callback_cpu / max(1, len(ids)) * 1000, 3),
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
