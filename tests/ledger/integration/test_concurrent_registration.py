"""A batch that registers a user someone else is registering at the same moment, on the real PostgreSQL: its
decisions stand when the other registration holds the same currency, and it is rejected for a retry (nothing
written) when the other chose another currency. A registration through the API (`PUT /v1/users/{id}`) at that
moment answers with the currency the other registration committed."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from contracts.codec import envelope_for
from contracts.events import PaymentSucceeded
from ledger import handlers
from ledger.adapters.postgres import PostgresLedger
from ledger.bootstrap import MIGRATIONS
from servicekit.postgres import ConcurrentWrite, create_pool, migrate
from servicekit.uow import batch, no_relay


@pytest.fixture
async def pool(database_url: str, isolation: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, f"{isolation}_ledger", min_size=2, max_size=4)
    await migrate(pool, MIGRATIONS)
    yield pool
    await pool.close()


def payment(order_id: str, user_id: str, currency: str) -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id=order_id,
        user_id=user_id,
        amount=600,
        currency=currency,
        channel="card",
        provider="sim",
        provider_txn_id=f"tx-{order_id}",
        paid_at=datetime.now(UTC),
    )


async def credit_while_registered_elsewhere(pool: asyncpg.Pool, held: str, paid_in: str) -> None:
    """The batch credits a payment in `paid_in` while another transaction registers its user in `held`."""
    message = payment("ord_1", "u1", paid_in)

    def uow() -> PostgresLedger:
        return PostgresLedger(pool, producer="ledger", topic_prefix="", on_commit=no_relay)

    async def consume() -> None:
        async with batch(pool):
            await handlers.handle_batch([(message, envelope_for(message, producer="test"))], uow=uow)

    async with pool.acquire() as other, other.transaction():
        await other.execute("INSERT INTO users (user_id, currency) VALUES ('u1', $1)", held)
        consuming = asyncio.create_task(consume())
        await waiting_for_the_other(pool, consuming)  # the batch's insert of u1 waits for the other transaction
    await consuming


async def waiting_for_the_other(pool: asyncpg.Pool, task: asyncio.Task[Any]) -> None:
    """Until `task` waits for a lock another transaction holds (or ends), within ten seconds."""
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    for _ in range(200):
        if await pool.fetchval(waiting) or task.done():
            return
        await asyncio.sleep(0.05)


async def test_a_user_registered_meanwhile_in_the_same_currency_leaves_the_credit_standing(pool: asyncpg.Pool) -> None:
    await credit_while_registered_elsewhere(pool, held="CNY", paid_in="CNY")
    assert await pool.fetchval("SELECT balance FROM accounts WHERE account_id = 'wallet:u1:CNY'") == 600
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_a_user_registered_meanwhile_in_another_currency_makes_the_batch_start_again(pool: asyncpg.Pool) -> None:
    with pytest.raises(ConcurrentWrite, match="another currency"):
        await credit_while_registered_elsewhere(pool, held="USD", paid_in="CNY")
    assert await pool.fetchval("SELECT count(*) FROM transactions") == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert await pool.fetchval("SELECT count(*) FROM processed_events") == 0


@pytest.mark.parametrize(("held", "asked"), [("CNY", "CNY"), ("USD", "CNY")])
async def test_a_user_registered_meanwhile_is_answered_with_the_currency_the_other_registration_committed(
    pool: asyncpg.Pool, held: str, asked: str
) -> None:
    async def register() -> str:
        async with PostgresLedger(pool, producer="ledger", topic_prefix="", on_commit=no_relay) as tx:
            return await tx.register_user("u1", asked)

    async with pool.acquire() as other:
        transaction = other.transaction()
        await transaction.start()
        await other.execute("INSERT INTO users (user_id, currency) VALUES ('u1', $1)", held)
        registering = asyncio.create_task(register())
        await waiting_for_the_other(pool, registering)  # its insert of u1 waits for the other transaction
        assert not registering.done()
        await transaction.commit()
    # The API answers 409 only when this differs from what was asked, naming it as the wallet's currency.
    assert await registering == held


async def test_two_batches_registering_the_same_new_users_in_opposite_orders_both_commit(pool: asyncpg.Pool) -> None:
    """Two consumers' batches (their orders differ, their users need not) register the same new users, listed in
    opposite orders: each waits for the other's insert of a user it reaches second, unless both insert in one order.
    PostgreSQL would break such a deadlock by failing one batch after a second, to be retried."""
    users = [f"u{n:05}" for n in range(2_000)]

    def uow() -> PostgresLedger:
        return PostgresLedger(pool, producer="ledger", topic_prefix="", on_commit=no_relay)

    async def consume(side: str, order: list[str]) -> None:
        messages = [payment(f"ord_{side}_{user}", user, "CNY") for user in order]
        async with batch(pool):
            await handlers.handle_batch([(m, envelope_for(m, producer="test")) for m in messages], uow=uow)

    await asyncio.gather(consume("a", users), consume("b", users[::-1]))
    assert await pool.fetchval("SELECT count(*) FROM users") == len(users)
    assert await pool.fetchval("SELECT count(*) FROM transactions") == 2 * len(users)
