"""The industry baseline: payments and credits land in two PostgreSQL tables, and a job polls every few
seconds with an anti-join for orders paid before `now() - threshold` that have no credit.

The tables are filled from the same Kafka topics the reconciler reads (decoded with the same codec), so the
ingest rate is comparable with a stream processor's; duplicates are absorbed by the primary keys. The poll
marks what it finds (`flagged_at`), as such a job does so that it alerts once.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.codec import DecodeError, decode
from contracts.events import CreditPosted, PaymentSucceeded
from contracts.topics import Topic
from harness.simulator.run import partition_count

POLL = """
UPDATE orders o SET flagged_at = clock_timestamp()
 WHERE o.flagged_at IS NULL
   AND o.paid_at + make_interval(secs => $1) < now()
   AND NOT EXISTS (SELECT 1 FROM credits c WHERE c.order_id = o.order_id)
RETURNING o.order_id, extract(epoch FROM o.flagged_at)::float8 AS flagged_at
"""


@dataclass
class Ingested:
    events: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    flags: dict[str, float] = field(default_factory=dict)


async def create_tables(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(f'SET search_path TO "{schema}"')
    await conn.execute(
        "CREATE TABLE orders (order_id text PRIMARY KEY, paid_at timestamptz NOT NULL, flagged_at timestamptz);"
        "CREATE INDEX orders_unflagged ON orders (paid_at) WHERE flagged_at IS NULL;"
        "CREATE TABLE credits (order_id text PRIMARY KEY, credited_at timestamptz NOT NULL);"
    )


def _rows(records: list[Any]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    orders, credits = [], []
    for r in records:
        try:
            message, _ = decode(r.value, [(k, v) for k, v in r.headers])
        except DecodeError:
            continue
        if isinstance(message, PaymentSucceeded):
            orders.append((message.order_id, message.paid_at))
        elif isinstance(message, CreditPosted):
            credits.append((message.order_id, message.credited_at))
    return orders, credits


async def ingest(
    bootstrap: str, prefix: str, conn: asyncpg.Connection, progress: Ingested, until: Callable[[], bool]
) -> None:
    """Copy both topics into the tables, batch by batch, from the beginning; stop when `until()` says so
    after a batch (or, with `until` always false, when cancelled)."""
    topics = [Topic.PAYMENTS_EVENTS.qualified(prefix), Topic.LEDGER_EVENTS.qualified(prefix)]
    partitions = [TopicPartition(t, p) for t in topics for p in range(await partition_count(bootstrap, t))]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while not until():
            batch = [
                r for records in (await consumer.getmany(timeout_ms=100, max_records=2000)).values() for r in records
            ]
            if not batch:
                continue
            progress.first_at = progress.first_at or time.time()
            orders, credits = _rows(batch)
            async with conn.transaction():
                await conn.executemany("INSERT INTO orders VALUES ($1, $2) ON CONFLICT DO NOTHING", orders)
                await conn.executemany("INSERT INTO credits VALUES ($1, $2) ON CONFLICT DO NOTHING", credits)
            progress.events += len(batch)
            progress.last_at = time.time()
    finally:
        await consumer.stop()


async def poll_once(conn: asyncpg.Connection, threshold_s: float, progress: Ingested) -> float:
    """One run of the job; returns how long the query took."""
    started = time.perf_counter()
    for row in await conn.fetch(POLL, threshold_s):
        progress.flags.setdefault(row["order_id"], row["flagged_at"])
    return time.perf_counter() - started


async def catch_up(bootstrap: str, prefix: str, database_url: str, threshold_s: float, events: int) -> dict[str, Any]:
    """Ingest a whole log, then run the job once: events/s of the ingest, the query's cost, the flags."""
    schema = f"peer_sql_{prefix.strip('.')}"
    conn = await asyncpg.connect(database_url)
    try:
        await create_tables(conn, schema)
        progress = Ingested()
        await ingest(bootstrap, prefix, conn, progress, lambda: progress.events >= events)
        query_s = await poll_once(conn, threshold_s, progress)
    finally:
        await conn.close()
    seconds = progress.last_at - progress.first_at
    return {
        "events": progress.events,
        "seconds": round(seconds + query_s, 3),
        "events_per_s": round(progress.events / (seconds + query_s)) if seconds + query_s > 0 else None,
        "query_s": round(query_s, 4),
        "flags": progress.flags,
    }


@dataclass
class LiveSql:
    """The baseline running alongside a live log: ingest continuously, poll every `poll_s`."""

    bootstrap: str
    prefix: str
    database_url: str
    threshold_s: float
    poll_s: float
    progress: Ingested = field(default_factory=Ingested)
    query_times: list[float] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _conns: list[asyncpg.Connection] = field(default_factory=list)

    async def start(self) -> None:
        schema = f"peer_sql_{self.prefix.strip('.')}"
        writer = await asyncpg.connect(self.database_url)
        await create_tables(writer, schema)
        poller = await asyncpg.connect(self.database_url, server_settings={"search_path": schema})
        self._conns = [writer, poller]
        self._tasks = [
            asyncio.create_task(ingest(self.bootstrap, self.prefix, writer, self.progress, lambda: False)),
            asyncio.create_task(self._poll(poller)),
        ]

    async def _poll(self, conn: asyncpg.Connection) -> None:
        while True:
            self.query_times.append(await poll_once(conn, self.threshold_s, self.progress))
            await asyncio.sleep(self.poll_s)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for conn in self._conns:
            await conn.close()
