"""servicekit.retention on the real PostgreSQL with tables of a service's own beside the processed events: each
table's rows past its own keep time are deleted, only those its condition selects, a batch a statement."""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import cast

import asyncpg
import pytest

from servicekit.postgres import create_pool, migrate
from servicekit.retention import Pruned, Retention

DAY = 86400.0
NOTES = Pruned("junk notes", "notes", "written_at", 3 * DAY, only="kind = 'junk'")


@pytest.fixture
async def pool(database_url: str, isolation: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, isolation)
    await migrate(pool)
    await pool.execute(
        "CREATE TABLE notes (id serial PRIMARY KEY, kind text NOT NULL, written_at timestamptz NOT NULL)"
    )
    yield pool
    await pool.close()


async def write(pool: asyncpg.Pool, kind: str, days_ago: float, n: int) -> None:
    await pool.execute(
        "INSERT INTO notes (kind, written_at) SELECT $1, now() - make_interval(secs => $2) FROM generate_series(1, $3)",
        kind,
        days_ago * DAY,
        n,
    )


async def notes(pool: asyncpg.Pool) -> dict[tuple[str, bool], int]:
    """How many notes of each kind are older than 3 days (True) or not."""
    rows = await pool.fetch(
        "SELECT kind, written_at < now() - interval '3 days' AS old, count(*) AS n FROM notes GROUP BY 1, 2"
    )
    return {(r["kind"], r["old"]): r["n"] for r in rows}


class Counting:
    """The pool, counting the statements run through it (the only call Retention makes)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool, self.statements = pool, 0

    async def execute(self, query: str, *args: object) -> str:
        self.statements += 1
        return str(await self.pool.execute(query, *args))


async def test_a_service_table_is_pruned_past_its_own_keep_time_and_only_the_rows_its_condition_selects(
    pool: asyncpg.Pool,
) -> None:
    await write(pool, "junk", 4, 25)
    await write(pool, "junk", 2, 5)
    await write(pool, "money", 40, 7)
    await pool.execute(
        "INSERT INTO processed_events (consumer, event_id, processed_at)"
        " SELECT 'c', 'e' || n, now() - interval '20 days' FROM generate_series(1, 12) AS n"
    )
    counting = Counting(pool)
    deleted = await Retention(cast(asyncpg.Pool, counting), NOTES, keep_s=14 * DAY, batch=10).prune()
    assert deleted == 25 + 12
    assert await notes(pool) == {("junk", False): 5, ("money", True): 7}  # the money is no junk: kept however old
    assert await pool.fetchval("SELECT count(*) FROM processed_events") == 0
    # a statement (its own transaction) per batch of 10: 2 for the processed events, 3 for the notes
    assert counting.statements == 2 + 3


async def test_the_retention_loop_prunes_every_table_each_interval_and_says_how_many(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    await write(pool, "junk", 4, 3)
    caplog.set_level(logging.INFO, logger="servicekit.retention")
    running = asyncio.create_task(Retention(pool, NOTES, interval_s=0.05).run())
    try:
        async with asyncio.timeout(10):
            while await pool.fetchval("SELECT count(*) FROM notes"):
                await asyncio.sleep(0.05)
            await write(pool, "junk", 5, 2)  # written after the first round: the next one takes them
            while await pool.fetchval("SELECT count(*) FROM notes"):
                await asyncio.sleep(0.05)
    finally:
        running.cancel()
    said = [r.getMessage() for r in caplog.records if r.name == "servicekit.retention"]
    assert "pruned 3 junk notes older than 259200 s" in said
    assert "pruned 2 junk notes older than 259200 s" in said
