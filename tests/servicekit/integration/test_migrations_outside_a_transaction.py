"""Migrations that build an index on a live table, on the real PostgreSQL: a migration marked to run outside a
transaction builds its index CONCURRENTLY, so the service's writes to that table go on meanwhile, and two instances
starting at once both finish."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from servicekit.postgres import OUTSIDE_A_TRANSACTION, create_pool, migrate

TABLE = "CREATE TABLE orders_under_test (order_id integer PRIMARY KEY, reviewed_at timestamptz);\n"
INDEX = f"""{OUTSIDE_A_TRANSACTION}
-- An interrupted build leaves an invalid index: drop it before building again.
DROP INDEX CONCURRENTLY IF EXISTS orders_under_test_reviewed_at;
CREATE INDEX CONCURRENTLY orders_under_test_reviewed_at ON orders_under_test (reviewed_at)
    WHERE reviewed_at IS NOT NULL;
"""


@pytest.fixture
async def pool(database_url: str, isolation: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, isolation)
    yield pool
    await pool.close()


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    directory = tmp_path / "service" / "migrations"
    directory.mkdir(parents=True)
    (directory / "0001_orders.sql").write_text(TABLE)
    return directory


async def index_state(pool: asyncpg.Pool) -> tuple[bool, bool] | None:
    row = await pool.fetchrow(
        "SELECT i.indisvalid, i.indisready FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = 'orders_under_test_reviewed_at' AND c.relnamespace = current_schema()::regnamespace"
    )
    return None if row is None else (row["indisvalid"], row["indisready"])


@asynccontextmanager
async def an_older_write(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """A transaction that wrote to the table and has not committed: a concurrent build waits for it to end."""
    async with pool.acquire() as older:
        open_write = older.transaction()
        await open_write.start()
        await older.execute("INSERT INTO orders_under_test VALUES (1, now())")
        try:
            yield
        finally:
            await open_write.commit()


async def building(pool: asyncpg.Pool) -> None:
    """Until a CREATE INDEX CONCURRENTLY of this schema's table waits for the transactions older than it."""
    for _ in range(200):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%CREATE INDEX CONCURRENTLY orders_under_test%'"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the index build never started waiting")


async def test_an_index_migration_outside_a_transaction_lets_the_tables_writes_go_on_while_it_builds(
    pool: asyncpg.Pool, migrations: Path
) -> None:
    """Built inside the migration's transaction, an index holds every insert into its table until it is done (on a
    large orders table, order placement stops for the whole build). Expected: an insert made while the build waits
    for an older transaction goes through at once, and the index ends valid and the migration recorded."""
    await migrate(pool, migrations)
    (migrations / "0002_orders_reviewed_at.sql").write_text(INDEX)
    async with an_older_write(pool), pool.acquire() as writer:
        applying = asyncio.create_task(migrate(pool, migrations))
        await building(pool)
        await writer.execute("SET lock_timeout = '3s'")
        await writer.execute("INSERT INTO orders_under_test VALUES (2, now())")  # refused after 3 s if held
        assert not applying.done()
    assert await asyncio.wait_for(applying, 60) == ["service/0002_orders_reviewed_at.sql"]
    assert await index_state(pool) == (True, True)
    assert await pool.fetchval("SELECT count(*) FROM orders_under_test") == 2


async def test_two_instances_applying_an_index_migration_at_once_both_finish(
    pool: asyncpg.Pool, migrations: Path
) -> None:
    """A concurrent build waits for every transaction older than it, and an instance waiting for the migration lock
    inside pg_advisory_lock is one: the build and the wait waited for each other until PostgreSQL's deadlock
    detector failed one of the two starts. Expected: both instances finish, the migration applied once."""
    await migrate(pool, migrations)
    (migrations / "0002_orders_reviewed_at.sql").write_text(INDEX)
    async with an_older_write(pool):
        first = asyncio.create_task(migrate(pool, migrations))
        await building(pool)
        second = asyncio.create_task(migrate(pool, migrations))
        await asyncio.sleep(2.0)  # past deadlock_timeout (1 s): the detector has looked
    applied = await asyncio.wait_for(asyncio.gather(first, second), 60)
    assert sorted(applied, key=len) == [[], ["service/0002_orders_reviewed_at.sql"]]
    assert await index_state(pool) == (True, True)


async def test_an_index_migration_interrupted_after_its_build_runs_again_to_a_valid_index(
    pool: asyncpg.Pool, migrations: Path
) -> None:
    """A process stopped between the build and the migration's record runs the migration again at its next start:
    the build must not fail on the index that is already there. Expected: the index is built again, valid, and the
    migration recorded once."""
    await migrate(pool, migrations)
    (migrations / "0002_orders_reviewed_at.sql").write_text(INDEX)
    await pool.execute(INDEX.split("\n", 1)[1].split(";", 1)[1])  # the build ran; its record was never written
    assert await migrate(pool, migrations) == ["service/0002_orders_reviewed_at.sql"]
    assert await index_state(pool) == (True, True)
    assert await pool.fetchval("SELECT count(*) FROM schema_migrations WHERE name LIKE 'service/%'") == 2
