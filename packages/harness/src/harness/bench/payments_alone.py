"""payments alone, on the shared broker and PostgreSQL: orders placed as fast as they are answered, then one
signed callback for each (signed before the timed phase). With wrk when it is installed (load.lua), else
from Python (httpx), which the figures then say. CPU per order and per callback is counted for payments
(every copy), for PostgreSQL (every backend) and for the broker, so the figure says what the machine spends.

Between the two phases payments' tables are analyzed, as a running service's are. They were empty a few seconds
before, and until autovacuum analyzed them, the callback's order lookup (`order_id = ANY($1) FOR UPDATE`) took
2.4 ms a call against 0.17 ms once analyzed (pg_stat_statements, one run each way). When autovacuum came decided
the figure: side by side, four rounds without the analysis took 2,771-4,113 callbacks/s and four with it
4,191-4,761 (docs/benchmarks-payments-ledger.md).
"""

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import psutil  # type: ignore[import-untyped]

from credited.stack.local import PAYMENTS_PROCESSES, LocalStack, StackConfig
from credited.stack.processes import free_port
from harness.bench import wrk
from servicekit.signatures import sign


class Meter:
    """CPU seconds used by named processes, each with its descendants, between `start` and `stop`: the tree's
    total then less its total at the start, each member's reaped children in it (a backend that exits during the
    phase leaves its CPU in its parent's children times)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._start: dict[str, dict[int, float]] = {}

    @staticmethod
    def _tree(pid: int) -> dict[int, float]:
        out = {}
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            for proc in (root, *root.children(recursive=True)):
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = proc.cpu_times()
                    out[proc.pid] = float(times.user + times.system + times.children_user + times.children_system)
        return out

    def start(self) -> None:
        self._start = {name: self._tree(pid) for name, pid in self._pids.items()}

    def stop(self) -> dict[str, float]:
        used = {}
        for name, pid in self._pids.items():
            before = self._start.get(name, {})
            used[name] = sum(self._tree(pid).values()) - sum(before.values())
        return used

    def processes(self, name: str) -> int:
        return len(self._tree(self._pids[name]))


def _stack(bootstrap: str, database_url: str, broker: str, run_dir: Path, processes: int) -> LocalStack:
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
    infra_pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """payments alone: `callbacks` orders placed, then one signed callback for each; `infra_pids` (postgres,
    broker) are metered too."""
    stack = _stack(bootstrap, database_url, broker, run_dir, processes)
    stack.start_service("payments")
    try:
        await asyncio.to_thread(stack.wait_healthy, "payments")
        await asyncio.to_thread(stack.create_key)  # a client like any other: orders need orders:write
        meter = Meter({"payments": stack.services["payments"].pid, **(infra_pids or {})})
        drive = _with_wrk if wrk.available() else _with_httpx
        # first a few untimed, so connections, consumer groups and PostgreSQL's caches are what they stay
        await drive(stack, Meter({}), max(20, callbacks // 20), concurrency)
        figures = await drive(stack, meter, callbacks, concurrency)
        figures["payments_processes"] = meter.processes("payments")
    finally:
        await asyncio.to_thread(stack.stop)
    return {"orders": callbacks, "concurrency": concurrency, **figures}


def _costs(phase: str, used: dict[str, float], count: int, seconds: float) -> dict[str, Any]:
    """Per process: CPU ms per request and cores busy during the phase."""
    out: dict[str, Any] = {}
    for name, cpu in used.items():
        out[f"{name}_cpu_ms_per_{phase}"] = round(cpu / max(1, count) * 1000, 3)
        out[f"{name}_cores_during_{phase}s"] = round(cpu / seconds, 2) if seconds > 0 else None
    return out


async def _analyze(stack: LocalStack) -> None:
    """Fresh statistics for payments' tables (see the module's docstring)."""
    schema = f"{stack.config.db_schema_prefix}payments"
    conn = await asyncpg.connect(stack.config.database_url)
    try:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
        for row in tables:
            await conn.execute(f'ANALYZE "{schema}"."{row["tablename"]}"')
    finally:
        await conn.close()


async def _with_wrk(stack: LocalStack, meter: Meter, orders: int, concurrency: int) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    url, secret, out = stack.url("payments"), stack.config.psp_secret, stack.config.run_dir / f"wrk-{run_id}"

    def job(mode: str, pay_file: Path | None = None) -> wrk.WrkJob:
        return wrk.WrkJob(
            url, mode, out / mode, orders, secret, run_id, users=max(1, orders // 5), connections=concurrency,
            pay_file=pay_file, api_key=stack.api_key,
        )  # fmt: skip

    placing = job("orders")
    meter.start()
    placed = await wrk.run(placing)
    order_cpu = meter.stop()
    rows = [r for r in wrk.lines(placing) if r[0] == "O"]
    pay_file = out / "pay.tsv"
    pay_file.write_text("".join(f"{r[1]}\t{r[3]}\n" for r in rows))
    paying = job("callbacks", pay_file)  # every callback is signed when wrk starts, before it sends any
    await _analyze(stack)
    meter.start()
    paid = await wrk.run(paying)
    callback_cpu = meter.stop()
    answers = [r for r in wrk.lines(paying) if r[0] in ("R", "E")]
    applied = sum(1 for r in answers if r[0] == "R" and r[2] == "200")
    return {
        "generator": "wrk",
        "orders_per_s": round(len(rows) / placed.duration_s, 1),
        "order_failures": orders - len(rows),
        **_costs("order", order_cpu, len(rows), placed.duration_s),
        "callbacks_per_s": round(applied / paid.duration_s, 1),
        "callback_failures": len(rows) - applied,
        **_costs("callback", callback_cpu, len(rows), paid.duration_s),
        "generator_cores_during_callbacks": round(paid.cpu_s / paid.duration_s, 2),
        "client_request_during_callbacks": paid.client_request,
    }


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


def _failed(responses: list[httpx.Response]) -> int:
    return sum(r.status_code not in (200, 201) for r in responses)


async def _with_httpx(stack: LocalStack, meter: Meter, callbacks: int, concurrency: int) -> dict[str, Any]:
    url = stack.url("payments")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits, headers=stack.headers) as client:
        orders = [
            {
                "url": f"{url}/v1/orders",
                "json": {"user_id": f"u{i % 500}", "amount": 600, "currency": "CNY", "channel": "card"},
                "headers": {"Idempotency-Key": f"{stack.config.topic_prefix}{uuid.uuid4().hex}"},
            }
            for i in range(callbacks)
        ]
        meter.start()
        order_s, placed = await _burst(client, orders, concurrency)
        order_cpu = meter.stop()
        ids = [r.json()["order_id"] for r in placed if r.status_code in (200, 201)]
        calls = [_callback(url, stack.config.psp_secret, oid) for oid in ids]
        await _analyze(stack)
        meter.start()
        callback_s, answered = await _burst(client, calls, concurrency)
        callback_cpu = meter.stop()
    return {
        "generator": "python (httpx): wrk is not installed",
        # What payments did, not what was sent: an order placed is one answered with its id, a callback one answered
        # 200 (a payments answering 503 in a millisecond would otherwise read as thousands a second).
        "orders_per_s": round(len(ids) / order_s, 1),
        "order_failures": _failed(placed),
        **_costs("order", order_cpu, len(ids), order_s),
        "callbacks_per_s": round(sum(r.status_code == 200 for r in answered) / callback_s, 1),
        "callback_failures": _failed(answered),
        **_costs("callback", callback_cpu, len(ids), callback_s),
    }
