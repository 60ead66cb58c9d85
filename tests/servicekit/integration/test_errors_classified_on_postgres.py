"""How servicekit.errors classifies what PostgreSQL says around a migration. Real PostgreSQL."""

import asyncpg

from servicekit.errors import classify
from servicekit.postgres import create_pool, fetch_planned_now


async def test_a_statement_whose_cached_plan_a_migration_invalidated_is_transient_not_a_final_verdict(
    database_url: str, isolation: str
) -> None:
    """A migration that changes a column's type (another instance of a rolling deploy ran it) makes the next run of
    a cached prepared statement fail with asyncpg's InvalidCachedStatementError ("cached plan must not change result
    type"). asyncpg has already dropped its statement caches, so the same call succeeds when tried again: it is the
    twin of OutdatedSchemaCacheError, which errors.py lists as transient. But its SQLSTATE is 0A000 and class 0A is
    FINAL, so every loop that trusts classify() gives up on it: the notifier's delivery worker (its claim runs in
    fetch_planned_now's transaction) raises and stops the whole notifier, an HTTP request gets a 500 instead of a
    503 to retry, and a consumer blames the poll's messages instead of waiting."""
    pool = await create_pool(database_url, isolation, min_size=1, max_size=1)
    try:
        await pool.execute("CREATE TABLE queue (id bigint PRIMARY KEY, attempts int NOT NULL)")
        await pool.execute("INSERT INTO queue VALUES (1, 0)")
        query = "SELECT id, attempts FROM queue"
        await fetch_planned_now(pool, query)
        await pool.execute("ALTER TABLE queue ALTER COLUMN attempts TYPE bigint")  # the new version's migration
        try:
            await fetch_planned_now(pool, query)
        except asyncpg.PostgresError as exc:
            error: asyncpg.PostgresError | None = exc
        else:
            error = None
        assert error is not None, "the cached statement did not fail: nothing to classify"
        again = await fetch_planned_now(pool, query)  # tried again, it simply works
        verdict = classify(error)
    finally:
        await pool.close()
    assert len(again) == 1
    assert verdict.transient, f"{error!r} is classified {verdict}, though the same call succeeds at once after it"
