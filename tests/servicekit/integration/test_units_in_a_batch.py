"""Units of work inside a consumer's batch share its transaction with no savepoint of their own (servicekit.uow):
a unit that fails fails its whole scope, even when the code around it swallowed the error. Real PostgreSQL."""

import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from contracts.topics import Topic
from servicekit.postgres import create_pool, migrate
from servicekit.uow import PostgresUnitOfWork, batch, no_relay, savepoint
from tests.servicekit.events import paid


class Facts(PostgresUnitOfWork):
    async def add(self, fact: str) -> None:
        await self.conn.execute("INSERT INTO facts (fact) VALUES ($1)", fact)


@pytest.fixture
async def pool(database_url: str, isolation: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, isolation)
    await migrate(pool)
    await pool.execute("CREATE TABLE facts (fact text PRIMARY KEY)")
    yield pool
    await pool.close()


def facts(pool: asyncpg.Pool) -> Facts:
    return Facts(pool, producer="test", topic_prefix="t.", on_commit=no_relay)


async def stored(pool: asyncpg.Pool) -> tuple[list[str], int]:
    rows = await pool.fetch("SELECT fact FROM facts ORDER BY fact")
    return [r["fact"] for r in rows], await pool.fetchval("SELECT count(*) FROM outbox")


async def test_units_of_work_in_a_batch_commit_their_rows_and_events_together(pool: asyncpg.Pool) -> None:
    async with batch(pool):
        for fact in ("a", "b"):
            async with facts(pool) as tx:
                await tx.add(fact)
                tx.publish(Topic.PAYMENTS_EVENTS, paid(f"ord_{fact}"))
        assert await stored(pool) == ([], 0)  # nothing is visible before the batch commits
    assert await stored(pool) == (["a", "b"], 2)


async def _a_batch_swallowing_a_failed_unit(pool: asyncpg.Pool) -> None:
    async with batch(pool):
        async with facts(pool) as tx:
            await tx.add("kept only if the batch commits")
            tx.publish(Topic.PAYMENTS_EVENTS, paid("ord_kept"))
        with contextlib.suppress(RuntimeError):  # a handler that swallows the failure must not commit its half
            async with facts(pool) as tx:
                await tx.add("half done")
                raise RuntimeError("the state change failed")


async def test_a_unit_that_failed_rolls_its_batch_back_even_if_its_error_was_swallowed(pool: asyncpg.Pool) -> None:
    with pytest.raises(RuntimeError, match="the state change failed"):
        await _a_batch_swallowing_a_failed_unit(pool)
    assert await stored(pool) == ([], 0)


async def _a_batch_swallowing_a_failed_statement(pool: asyncpg.Pool) -> None:
    async with batch(pool):
        with contextlib.suppress(asyncpg.UniqueViolationError):
            async with facts(pool) as tx:
                await tx.add("taken")


async def test_a_statement_that_failed_in_a_unit_fails_the_batch_with_its_own_error(pool: asyncpg.Pool) -> None:
    await pool.execute("INSERT INTO facts (fact) VALUES ('taken')")
    with pytest.raises(asyncpg.UniqueViolationError):
        await _a_batch_swallowing_a_failed_statement(pool)
    assert await stored(pool) == (["taken"], 0)


async def _a_message(pool: asyncpg.Pool, fact: str, *, then_a_duplicate_of: str | None = None) -> None:
    """One message in its savepoint: a unit adding `fact`, then maybe a unit whose duplicate key fails, swallowed."""
    async with savepoint():
        async with facts(pool) as tx:
            await tx.add(fact)
            tx.publish(Topic.PAYMENTS_EVENTS, paid(f"ord_{fact}"))
        if then_a_duplicate_of is not None:
            with contextlib.suppress(asyncpg.UniqueViolationError):
                async with facts(pool) as tx:
                    await tx.add(then_a_duplicate_of)


async def test_a_unit_that_failed_in_a_message_savepoint_rolls_back_that_message_alone(pool: asyncpg.Pool) -> None:
    async with batch(pool):
        await _a_message(pool, "first")
        with pytest.raises(asyncpg.UniqueViolationError):
            await _a_message(pool, "second", then_a_duplicate_of="first")
        await _a_message(pool, "third")
    assert await stored(pool) == (["first", "third"], 2)
