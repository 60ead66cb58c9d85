"""wrk as the benchmark's load generator: its threads place the orders and send the signed callbacks
(load.lua), so Python's HTTP client is not what limits the figure; the ground truth comes back as the lines
each wrk thread writes, and wrk's own CPU time comes from the kernel when it exits.

Without wrk on PATH (`scripts/prerequisites` installs it) the benchmark falls back to the Python
simulator (harness/bench/driver.py) and says so in the report.
"""

import asyncio
import contextlib
import math
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from harness.simulator.run import Load, Truth
from servicekit.serving import HEADERS_WITHIN_S

LUA = Path(__file__).with_name("load.lua")


def available() -> bool:
    return shutil.which("wrk") is not None


@dataclass(frozen=True)
class WrkRun:
    """What one wrk run reported: its wall time, requests, request latency as it saw it, and its CPU."""

    duration_s: float
    requests: int
    client_request: dict[str, float]
    cpu_s: float
    socket_errors: int
    lost_requests: int = 0
    """Requests sent and never answered (their connection broke): the threads gave up on them (load.lua)."""
    connections: int = 0

    def figures(self) -> dict[str, Any]:
        return {
            "generator": "wrk",
            "generator_cpu_s": round(self.cpu_s, 3),
            "generator_requests": self.requests,
            "client_request": self.client_request,
            "socket_errors": self.socket_errors,
            "generator_lost_requests": self.lost_requests,
            "generator_connections": self.connections,
        }


@dataclass(frozen=True)
class WrkJob:
    """One wrk run of load.lua: `mode` pipeline | orders | callbacks (see the script's header)."""

    url: str
    mode: str
    out: Path
    orders: int
    secret: str
    run_id: str
    rate: float = 0.0
    duplicates: float = 0.0
    users: int = 1
    threads: int = 2
    connections: int = 64
    pay_file: Path | None = None
    max_s: float = 300.0
    timeout_s: float = 30.0
    """wrk's --timeout, and how long a thread with nothing left to send waits for its last answers."""
    idle_s: float = HEADERS_WITHIN_S / 2
    """The longest a connection sleeps before it sends something: payments closes one whose first request has not
    come within HEADERS_WITHIN_S of its opening, and a request written as it closes is lost."""
    api_key: str = ""
    """Sent with every order (`Authorization: Bearer`); passed in wrk's environment, never on its command line."""

    @property
    def open_connections(self) -> int:
        """What wrk opens: at least one connection per thread."""
        return max(self.connections, self.threads)

    def argv(self, start_at: float) -> list[str]:
        script = [self.mode, str(self.out), str(self.threads), str(self.orders), f"{self.rate:g}"]
        script += [f"{self.duplicates:g}", self.secret, self.run_id, str(self.users), f"{start_at:.6f}"]
        if self.pay_file is not None:
            script.append(str(self.pay_file))
        wrk = ["wrk", "-t", str(self.threads), "-c", str(self.open_connections)]
        wrk += ["-d", f"{max(1, round(self.max_s))}s", "--timeout", f"{max(1, round(self.timeout_s))}s"]
        wrk += ["-s", str(LUA), self.url, "--"]
        return [*wrk, *script]


def _wait(proc: subprocess.Popen[bytes]) -> float:
    """Wait for wrk and return the CPU seconds it used (user + system, all its threads)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return float(usage.ru_utime + usage.ru_stime)


def _start(job: WrkJob, argv: list[str]) -> subprocess.Popen[bytes]:
    # load.lua reads both; the key is not on the command line, which every user of the machine can read
    env = {**os.environ, "CREDITED_API_KEY": job.api_key, "CREDITED_WRK_GIVE_UP_S": f"{job.timeout_s:g}"}
    env["CREDITED_WRK_IDLE_MS"] = str(max(1, round(job.idle_s * 1000)))
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _all_done(job: WrkJob) -> bool:
    """Whether every thread wrote its last line (D): wrk itself would sleep on until its -d duration."""
    for index in range(job.threads):
        try:
            with open(f"{job.out}.{index}", "rb") as log:
                log.seek(-2, os.SEEK_END)
                if log.read() != b"D\n":
                    return False
        except OSError:
            return False
    return True


async def _interrupt_when_done(proc: subprocess.Popen[bytes], job: WrkJob) -> None:
    while not await asyncio.to_thread(_all_done, job):  # noqa: ASYNC110 - wrk's threads only write files
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGINT)


async def run(job: WrkJob) -> WrkRun:
    """Run wrk until every thread has finished its share (or `max_s` passes)."""
    job.out.parent.mkdir(parents=True, exist_ok=True)
    start_at = time.time() + 0.2  # every thread's schedule starts from the same instant
    proc = await asyncio.to_thread(_start, job, job.argv(start_at))
    watching = asyncio.create_task(_interrupt_when_done(proc, job))
    try:
        cpu_s = await asyncio.to_thread(_wait, proc)
    except BaseException:
        proc.kill()
        raise
    finally:
        watching.cancel()
    assert proc.stdout is not None
    assert proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    summary = next((line for line in out.splitlines() if line.startswith(b"{")), None)
    if proc.returncode != 0 or summary is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode(errors='replace')[-500:]}")
    figures = orjson.loads(summary)
    errors = sum(figures[k] for k in ("connect_errors", "read_errors", "write_errors"))
    return WrkRun(
        duration_s=figures["duration_s"],
        requests=figures["requests"],
        client_request={"p50_ms": round(figures["p50_ms"], 1), "p99_ms": round(figures["p99_ms"], 1)},
        cpu_s=cpu_s,
        socket_errors=errors,
        lost_requests=sum(int(row[1]) for row in lines(job) if row[0] == "L"),
        connections=job.open_connections,
    )


def lines(job: WrkJob) -> list[list[str]]:
    """Every ground-truth line the threads wrote, split into fields."""
    rows = []
    for index in range(job.threads):
        path = Path(f"{job.out}.{index}")
        if path.exists():
            rows += [line.split("\t") for line in path.read_text().splitlines() if line]
    return rows


def read_truth(job: WrkJob, truth: Truth) -> None:
    """The simulator's ground truth from what wrk's threads wrote: orders placed, when each was paid, which
    callbacks went twice, and every request that failed."""
    sends: dict[str, int] = {}
    answers: dict[str, list[str]] = {}
    for row in lines(job):
        kind = row[0]
        if kind == "D":
            continue
        if kind == "L":
            truth.errors.append(f"{row[1]} requests sent by the load generator were never answered (connection lost)")
            continue
        if kind == "O":
            truth.orders[row[1]] = {"user_id": row[2], "amount": int(row[3]), "channel": row[4]}
        elif kind == "C":
            truth.orders.setdefault(row[1], {})["paid_at"] = float(row[2])
            sends[row[1]] = int(row[3])
        elif kind == "R":
            answers.setdefault(row[1], []).append(row[2])
        else:
            truth.errors.append(f"HTTP {row[1]}: {row[2] if len(row) > 2 else ''}")
    for order_id, sent in sends.items():
        if "200" in answers.get(order_id, []):
            truth.paid.add(order_id)
            truth.duplicate_callbacks += sent - 1
        else:
            truth.errors.append(f"callback for {order_id}: {answers.get(order_id, 'no answer')}")


def connections_for(load: Load) -> int:
    """As many connections as the rate keeps busy, up to `load.concurrency`: each connection reserves its next
    order's slot at most `idle_s` ahead, so at a low rate the rest would only wake to ask /healthz."""
    return min(load.concurrency, max(16, math.ceil(load.rate * WrkJob.idle_s / 2)))


async def drive(url: str, secret: str, load: Load, truth: Truth, work_dir: Path, *, api_key: str) -> WrkRun:
    """Place and pay `load.orders` orders at `load.rate` per second with wrk; fill `truth`."""
    users = load.users or max(1, load.orders // 5)
    job = WrkJob(
        url=url,
        mode="pipeline",
        out=work_dir / f"wrk-{truth.run_id}" / "truth",
        orders=load.orders,
        secret=secret,
        run_id=truth.run_id,
        rate=load.rate,
        duplicates=load.duplicate_share,
        users=users,
        threads=1 if load.rate < 500 else 2,
        connections=connections_for(load),
        max_s=3 * load.orders / load.rate + 60,
        api_key=api_key,
    )
    result = await run(job)
    await asyncio.to_thread(read_truth, job, truth)
    return result
