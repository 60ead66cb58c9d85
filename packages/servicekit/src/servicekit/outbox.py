"""The transactional outbox: events are rows written with the state change; a relay publishes them.

No gap between commit and publish: a crash after commit leaves the row for the next relay run; a
rollback leaves no row. Relays lock rows with SKIP LOCKED, so two relays never publish the same row
at once, and rows are deleted only after the broker acknowledged them (a relay that dies in between
publishes them again: consumers drop the repeat by event id).
"""

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from contracts.codec import Record
from servicekit.kafka import KafkaPublisher
from servicekit.metrics import OutboxMetrics

log = logging.getLogger(__name__)


async def add_to_outbox(conn: PoolConnectionProxy, entries: Sequence[tuple[str, Record]]) -> None:
    """Queue (topic, record) pairs for publication inside the caller's transaction."""
    if not entries:
        return
    await conn.executemany(
        "INSERT INTO outbox (topic, key, value, headers) VALUES ($1, $2, $3, $4::jsonb)",
        [
            (topic, r.key, r.value, orjson.dumps([[k, v.decode()] for k, v in r.headers]).decode())
            for topic, r in entries
        ],
    )


class OutboxRelay:
    """Publishes the outbox of one schema to Kafka, woken by NOTIFY or by `wake()`, polling as a fallback."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: KafkaPublisher,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        metrics: OutboxMetrics | None = None,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._wakeup = asyncio.Event()
        self._metrics = metrics
        self.published_total = 0

    def wake(self) -> None:
        """Something was just committed to the outbox: publish without waiting for the poll."""
        self._wakeup.set()

    async def run(self) -> None:
        """Publish until cancelled."""
        listener = await self._pool.acquire()
        try:
            schema = await listener.fetchval("SELECT current_schema()")
            channel = f"outbox_{schema}"
            await listener.add_listener(channel, self._on_notify)
            while True:
                try:
                    moved = await self.publish_batch()
                except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                    log.warning("outbox relay could not publish, will retry: %s", exc)
                    moved = 0
                    await asyncio.sleep(self._poll_interval_s)
                if moved < self._batch_size:
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), self._poll_interval_s)
        finally:
            with contextlib.suppress(Exception):
                await listener.remove_listener(channel, self._on_notify)
            await self._pool.release(listener)

    def _on_notify(self, *_: object) -> None:
        self._wakeup.set()

    async def publish_batch(self) -> int:
        """Publish up to one batch of rows in id order; return how many left the outbox."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, topic, key, value, headers FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch_size,
            )
            if not rows:
                return 0
            await self._publisher.publish_many(
                [
                    (
                        row["topic"],
                        Record(
                            key=row["key"],
                            value=row["value"],
                            headers=[(k, v.encode()) for k, v in orjson.loads(row["headers"])],
                        ),
                    )
                    for row in rows
                ]
            )
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [row["id"] for row in rows])
        self.published_total += len(rows)
        if self._metrics is not None:
            self._metrics.published(len(rows))
        return len(rows)

    async def backlog(self) -> tuple[int, float]:
        """(rows waiting, age in seconds of the oldest), for metrics."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age FROM outbox"
            )
        assert row is not None
        return int(row["n"]), float(row["age"])

    async def observe_backlog(self) -> None:
        """Publish the backlog and the oldest row's age to the metrics (called periodically)."""
        if self._metrics is not None:
            self._metrics.backlog(*await self.backlog())
