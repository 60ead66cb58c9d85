"""Ledger benchmark: credits/s of the ledger alone on the real PostgreSQL, exactly as its consumer applies them.

    python -m ledger.bench [--credits N] [--batch B] [--consumers C] [--duplicates D] [--users U] [--out PATH]
                           [--profile PATH]

DATABASE_URL points at a running PostgreSQL; unset, an embedded one is started for the run. The log: N paid orders
of U users, with a share D of the payment events delivered twice (idempotency), as encoded Kafka records. They are
split by order id among C consumers, as the partitions of the payments topic are among the members of the ledger's
consumer group (LEDGER_PAYMENTS_CONSUMERS), and each consumer decodes and applies its share in batches of B
through the ledger's real batch handler and PostgresLedger, one database transaction per batch on its own
connection, as the consumer applies a poll (the broker itself is not in the figure). Every credit writes its
transaction, two entries, its share of the balances (each account moves once per batch), the processed event id
and its CreditPosted outbox row. The books are checked afterwards. The figures go to a JSON and a Markdown report;
nothing here asserts a timing.
"""

import argparse
import asyncio
import gc
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop

from contracts.codec import Record, decode, encode, envelope_for
from contracts.events import PaymentSucceeded
from ledger import handlers
from ledger.adapters.postgres import PostgresLedger
from ledger.bootstrap import MIGRATIONS
from ledger.config import Settings
from servicekit.postgres import create_pool, migrate
from servicekit.uow import batch, no_relay

TARGET_CREDITS_PER_S = 50_000


@dataclass(frozen=True)
class BenchOptions:
    credits: int = 20_000
    batch: int = 500
    consumers: int = Settings.model_fields["payments_consumers"].default
    duplicates: float = 0.1
    users: int = 4_000
    out: Path = Path("artifacts/bench/ledger.json")
    profile: Path | None = None


def payment_log(options: BenchOptions, tag: str) -> list[Record]:
    """The encoded payment events, with every k-th one delivered again right after itself."""
    every = round(1 / options.duplicates) if options.duplicates > 0 else 0
    records: list[Record] = []
    for i in range(options.credits):
        event = PaymentSucceeded(
            order_id=f"{tag}_{i:08d}",
            user_id=f"{tag}_u{i % options.users}",
            amount=600,
            currency="CNY",
            channel="card",
            provider="sim",
            provider_txn_id=f"tx{i}",
            paid_at=datetime.now(UTC),
        )
        record = encode(event, envelope_for(event, producer="payments"))
        records.append(record)
        if every and i % every == 0:
            records.append(record)
    return records


async def apply(pool: asyncpg.Pool, records: list[Record], batch_size: int, consumers: int) -> list[float]:
    """Apply the records as the consumers do, each its share of the orders; the seconds each batch took."""

    def uow() -> PostgresLedger:
        return PostgresLedger(pool, producer="ledger", topic_prefix="bench.", on_commit=no_relay)  # rows counted

    times: list[float] = []

    async def consume(share: list[Record]) -> None:
        for start in range(0, len(share), batch_size):
            started = time.perf_counter()
            deliveries = [decode(record.value, record.headers) for record in share[start : start + batch_size]]
            async with batch(pool):
                await handlers.handle_batch(deliveries, uow=uow)
            times.append(time.perf_counter() - started)

    shares: list[list[Record]] = [[] for _ in range(consumers)]
    for record in records:
        shares[zlib.crc32(record.key) % consumers].append(record)
    await asyncio.gather(*(consume(share) for share in shares))
    return times


async def check_books(pool: asyncpg.Pool, credits: int) -> dict[str, Any]:
    """The books after the run: one credit per order, balanced, every credit announced once."""
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM transactions WHERE kind = 'credit') AS credits,"
        " (SELECT count(*) FROM entries) AS entries,"
        " (SELECT coalesce(sum(balance), 0) FROM accounts) AS books_sum,"
        " (SELECT count(*) FROM outbox) AS outbox_rows,"
        " (SELECT count(*) FROM processed_events) AS processed"
    )
    assert row is not None
    books = dict(row)
    books["ok"] = books["credits"] == credits == books["outbox_rows"] and books["books_sum"] == 0
    books["entries_ok"] = books["entries"] == 2 * credits
    return {k: int(v) if not isinstance(v, bool) else v for k, v in books.items()}


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _postmaster(backend_pid: int) -> int | None:
    """The PostgreSQL server process of a backend, when it runs on this machine."""
    try:
        return int(_stat(backend_pid)[1])
    except OSError:
        return None


def _server_cpu_s(postmaster: int | None) -> float | None:
    """CPU seconds of a PostgreSQL server: its own, the children it reaped (such as backends the pool
    replaced) and the live ones; None when it is not on this machine."""
    if postmaster is None:
        return None
    try:
        ticks = sum(int(f) for f in _stat(postmaster)[11:15])
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                child = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(child[1]) == postmaster:
                ticks += int(child[11]) + int(child[12])
    except OSError:
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def profiled(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="enabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(profiler.output_text(unicode=True, show_all=False))


async def run_bench(database_url: str, options: BenchOptions) -> dict[str, Any]:
    tag = f"lb{uuid.uuid4().hex[:8]}"
    # One connection per consumer. The server's CPU is PostgreSQL's share of the work when nothing else uses
    # that server.
    pool = await create_pool(database_url, f"bench_{tag}", min_size=options.consumers, max_size=options.consumers)
    try:
        await migrate(pool, MIGRATIONS)
        server = _postmaster(int(await pool.fetchval("SELECT pg_backend_pid()")))
        records = payment_log(options, tag)
        # The log stands in for the broker, outside the ledger's process: frozen, so that the collector's full
        # passes do not walk its records as the consumers' objects come and go. They cost about a fifth of this
        # process's CPU. The service has no such log in its heap: tuning its collector the same way changed
        # nothing in the pipeline (bench-revisions, 35-280 orders/s, ledger CPU per order 1.00-1.01x).
        gc.collect()
        gc.freeze()
        load_before = os.getloadavg()
        cpu_before, server_before = resource.getrusage(resource.RUSAGE_SELF), _server_cpu_s(server)
        started = time.perf_counter()
        with profiled(options.profile):
            times = await apply(pool, records, options.batch, options.consumers)
        elapsed = time.perf_counter() - started
        cpu_after, server_after = resource.getrusage(resource.RUSAGE_SELF), _server_cpu_s(server)
        load_after = os.getloadavg()
        books = await check_books(pool, options.credits)
        await pool.execute(f'DROP SCHEMA "bench_{tag}" CASCADE')
    finally:
        await pool.close()
    cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    pg_cpu_s = None if server_before is None or server_after is None else server_after - server_before
    both = cpu_s + (pg_cpu_s or 0.0)
    ordered = sorted(times)
    return {
        "benchmark": "ledger credits, isolated (no broker), idempotent, with entries and outbox",
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "messages": len(records),
        "credits": options.credits,
        "seconds": round(elapsed, 3),
        "credits_per_s": round(options.credits / elapsed),
        "messages_per_s": round(len(records) / elapsed),
        "batch_size": options.batch,
        "consumers": options.consumers,
        "batches": len(times),
        "batch_p50_ms": round(statistics.median(ordered) * 1000, 1),
        "batch_p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "bench_process_cpu_s": round(cpu_s, 2),
        "credits_per_bench_cpu_s": round(options.credits / cpu_s) if cpu_s else None,
        "postgres_server_cpu_s": None if pg_cpu_s is None else round(pg_cpu_s, 2),
        "credits_per_cpu_s_bench_and_postgres": round(options.credits / both) if pg_cpu_s else None,
        "target_credits_per_s": TARGET_CREDITS_PER_S,
        "books": books,
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in load_after],
        },
        "profile": str(options.profile) if options.profile else None,
    }


def markdown(report: dict[str, Any]) -> str:
    rows = [
        ("credits/s", f"{report['credits_per_s']:,}", f"{report['target_credits_per_s']:,}"),
        ("messages/s (with duplicates)", f"{report['messages_per_s']:,}", ""),
        ("batch size", report["batch_size"], ""),
        ("consumers (connections) sharing the orders", report["consumers"], ""),
        ("batch time p50 / p99 (ms)", f"{report['batch_p50_ms']} / {report['batch_p99_ms']}", ""),
        ("credits per CPU second of the benchmark process", report["credits_per_bench_cpu_s"], ""),
        (
            "credits per CPU second, benchmark and PostgreSQL",
            report["credits_per_cpu_s_bench_and_postgres"],
            "",
        ),
        ("books balanced, one credit and one announcement per order", report["books"]["ok"], "True"),
    ]
    lines = [
        "# Ledger benchmark",
        "",
        f"{report['benchmark']}: {report['credits']:,} credits in {report['messages']:,} payment events"
        f" ({report['options']['duplicates']:.0%} delivered twice), {report['options']['users']:,} users,"
        f" {report['seconds']} s. Machine: {report['machine']['cpus']} CPUs, load average before"
        f" {report['machine']['load_before']}, after {report['machine']['load_after']} (a shared machine: the"
        " per-CPU-second figures hold up better than the wall rate).",
        "",
        "| figure | measured | target |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    defaults = BenchOptions()
    parser = argparse.ArgumentParser(prog="python -m ledger.bench", description=__doc__)
    parser.add_argument("--credits", type=int, default=defaults.credits, help="paid orders to credit")
    parser.add_argument("--batch", type=int, default=defaults.batch, help="messages per consumed batch")
    parser.add_argument("--consumers", type=int, default=defaults.consumers, help="consumers sharing the orders")
    parser.add_argument("--duplicates", type=float, default=defaults.duplicates, help="share delivered twice")
    parser.add_argument("--users", type=int, default=defaults.users, help="distinct users")
    parser.add_argument("--out", type=Path, default=defaults.out, help="the JSON report (Markdown beside it)")
    parser.add_argument("--profile", type=Path, default=None, help="write a pyinstrument profile here")
    args = parser.parse_args()
    options = BenchOptions(
        args.credits, args.batch, args.consumers, args.duplicates, args.users, args.out, args.profile
    )
    report = embedded_and_run(options)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    options.out.with_suffix(".md").write_text(markdown(report))
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")


def embedded_and_run(options: BenchOptions) -> dict[str, Any]:
    """Run on DATABASE_URL, or on an embedded PostgreSQL started for the run."""
    database_url = os.environ.get("DATABASE_URL")
    if database_url:
        return uvloop.run(run_bench(database_url, options))
    from credited.stack.embedded import EmbeddedPostgres
    from credited.stack.processes import free_port

    workdir = Path(tempfile.mkdtemp(prefix="credited-ledger-bench-"))
    postgres = EmbeddedPostgres(workdir / "pg", free_port(), workdir)
    postgres.start()
    try:
        return uvloop.run(run_bench(postgres.dsn, options))
    finally:
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
