"""The processed events' pruning on the real PostgreSQL once the table has been pruned before: VACUUM gives the pruned
rows' pages to new events, so the table no longer grows only at its end, and each batch must still find the rows
past the keep time without reading the events kept."""

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from servicekit.postgres import create_pool, migrate
from servicekit.retention import Retention, processed_events

DAY = 86400.0
BATCH = 2000


@pytest.fixture
async def pool(database_url: str, isolation: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, isolation)
    await migrate(pool)
    await pool.execute("ALTER TABLE processed_events SET (autovacuum_enabled = false)")  # the test vacuums itself
    yield pool
    await pool.close()


async def consume(pool: asyncpg.Pool, label: str, days_ago: float, n: int) -> None:
    """`n` events applied `days_ago`, as a consumer records them (one row each, in one statement)."""
    await pool.execute(
        "INSERT INTO processed_events (consumer, event_id, processed_at)"
        " SELECT 'ledger.payments', $1 || '-' || n || '-' || md5(n::text), now() - make_interval(secs => $2)"
        " FROM generate_series(1, $3) AS n",
        label,
        days_ago * DAY,
        n,
    )


def rows_read_and_left(plan: dict[str, Any]) -> int:
    """The rows the plan's scans read and did not return (filtered out, or rechecked out of a lossy bitmap)."""
    own = int(plan.get("Rows Removed by Filter", 0)) + int(plan.get("Rows Removed by Index Recheck", 0))
    return own + sum(rows_read_and_left(child) for child in plan.get("Plans", []))


async def test_a_batch_of_the_processed_events_pruning_reads_the_rows_it_deletes_not_the_events_kept(
    pool: asyncpg.Pool,
) -> None:
    """A BRIN summary never narrows: a block range summarised while it held month-old events still says so once
    VACUUM freed it and today's events filled it, so every batch read every such range again. After a few weeks every
    range of the table is one, and each batch of 5,000 read the table from its start to the events due (at 1,500
    orders/s the ledger keeps 1.8 billion), hundreds of batches a round: the pruning fell behind for good. Expected:
    a batch reads about the rows it deletes."""
    await consume(pool, "month-old", 30, 60_000)  # the oldest, pruned first
    await consume(pool, "due-next", 29, BATCH)  # the next round's
    await consume(pool, "kept", 10, 60_000)
    await pool.execute("VACUUM processed_events")  # as autovacuum does while events are inserted: ranges summarised
    assert await Retention(pool, batch=BATCH).prune_one(processed_events(29.5 * DAY)) == 60_000
    await pool.execute("VACUUM processed_events")  # as autovacuum does after a large delete: the pages are free again
    await consume(pool, "today", 0, 60_000)  # new events fill the pages the pruned ones left
    await pool.execute("ANALYZE processed_events")

    due = processed_events(28.5 * DAY)
    explained = await pool.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {due.statement}", due.keep_s, BATCH, column=0)
    plan = orjson.loads(explained)[0]["Plan"]
    assert await pool.fetchval("SELECT count(*) FROM processed_events WHERE event_id LIKE 'due-next-%'") == 0
    read_and_left = rows_read_and_left(plan)
    assert read_and_left < BATCH, (
        f"deleting {BATCH} events past the keep time read {read_and_left} events it kept"
        f" ({orjson.dumps(plan).decode()[:1500]})"
    )
