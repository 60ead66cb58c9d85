"""The ledger state machine (tests/ledger/stateful.py) on the real PostgreSQL adapter: the invariants are SQL
over the real tables, the announcements are read from the real outbox."""

import asyncio
from collections.abc import Sequence

import asyncpg
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from contracts.base import Message
from ledger.adapters.postgres import PostgresLedger
from ledger.bootstrap import MIGRATIONS
from ledger.handlers import UserPolicy, handle_batch
from servicekit.postgres import create_pool, migrate
from servicekit.uow import batch, no_relay
from tests.ledger.outbox import outbox_messages
from tests.ledger.stateful import Delivery, machine

# Each names what it finds; every one must find nothing after every step.
INVARIANTS = {
    "transactions whose entries do not sum to zero (or that have fewer than two)": (
        "SELECT t.transaction_id FROM transactions t LEFT JOIN entries e USING (transaction_id)"
        " GROUP BY t.transaction_id HAVING coalesce(sum(e.amount), 0) <> 0 OR count(e.account_id) < 2"
    ),
    "accounts whose stored balance is not the sum of their entries": (
        "SELECT a.account_id, a.balance, coalesce(sum(e.amount), 0) AS entries FROM accounts a"
        " LEFT JOIN entries e USING (account_id) GROUP BY a.account_id HAVING a.balance <> coalesce(sum(e.amount), 0)"
    ),
    "entries without their transaction or account": (
        "SELECT e.transaction_id, e.account_id FROM entries e LEFT JOIN transactions t USING (transaction_id)"
        " LEFT JOIN accounts a USING (account_id) WHERE t.transaction_id IS NULL OR a.account_id IS NULL"
    ),
    "negative wallets": "SELECT account_id, balance FROM accounts WHERE kind = 'wallet' AND balance < 0",
    "books that do not sum to zero": "SELECT sum(balance) FROM accounts HAVING sum(balance) <> 0",
    "orders with more than one credit or compensation": (
        "SELECT order_id, kind, count(*) FROM transactions GROUP BY order_id, kind HAVING count(*) > 1"
    ),
    "credited orders that are blocked or refunded": (
        "SELECT order_id, reason FROM transactions JOIN credit_blocks USING (order_id) WHERE kind = 'credit'"
    ),
    "compensations without a credit": (
        "SELECT order_id FROM transactions c WHERE kind = 'compensation' AND NOT EXISTS"
        " (SELECT 1 FROM transactions t WHERE t.order_id = c.order_id AND t.kind = 'credit')"
    ),
    "credits in another currency than the user's wallet": (
        "SELECT t.order_id FROM transactions t JOIN entries e USING (transaction_id) JOIN accounts a USING (account_id)"
        " JOIN users u USING (user_id) WHERE t.kind = 'credit' AND a.kind = 'wallet' AND a.currency <> u.currency"
    ),
}

TABLES = (
    "accounts, transactions, entries, credit_blocks, users, injected_faults, payment_facts, processed_events, outbox"
)


class PostgresBooks:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._seen = 0

    def uow(self) -> PostgresLedger:
        return PostgresLedger(self.pool, producer="ledger", topic_prefix="", on_commit=no_relay)

    async def reset(self) -> None:
        await self.pool.execute(f"TRUNCATE {TABLES}")
        self._seen = 0

    async def consume(self, deliveries: Sequence[Delivery], users: UserPolicy) -> None:
        async with batch(self.pool):  # as the consumer applies a poll: one transaction
            await handle_batch(deliveries, uow=self.uow, users=users)

    async def freeze(self, user_id: str, currency: str) -> None:
        await self.pool.execute(
            "INSERT INTO accounts (account_id, kind, user_id, currency, frozen) VALUES ($1, 'wallet', $2, $3, true)"
            " ON CONFLICT (account_id) DO UPDATE SET frozen = true",
            f"wallet:{user_id}:{currency}",
            user_id,
            currency,
        )

    async def register(self, user_id: str, currency: str) -> None:
        async with self.uow() as tx:
            await tx.register_user(user_id, currency)

    async def violations(self) -> list[str]:
        async with self.pool.acquire() as conn:
            return [f"{name}: {rows}" for name, sql in INVARIANTS.items() if (rows := await conn.fetch(sql))]

    async def wallets(self) -> dict[str, int]:
        rows = await self.pool.fetch("SELECT account_id, balance FROM accounts WHERE kind = 'wallet' AND balance <> 0")
        return {r["account_id"]: r["balance"] for r in rows}

    async def transactions(self) -> dict[tuple[str, str], int]:
        rows = await self.pool.fetch(
            "SELECT t.order_id, t.kind, e.amount FROM transactions t JOIN entries e USING (transaction_id)"
            " JOIN accounts a USING (account_id) WHERE a.kind = 'wallet'"
        )
        return {(r["order_id"], r["kind"]): r["amount"] for r in rows}

    async def blocked(self) -> set[str]:
        return {r["order_id"] for r in await self.pool.fetch("SELECT order_id FROM credit_blocks")}

    async def take_published(self) -> list[Message]:
        rows = await outbox_messages(self.pool, self._seen)
        if rows:
            self._seen = rows[-1][0]
        return [message for _, message, _ in rows]


def test_the_ledger_keeps_its_invariants_in_any_history_on_postgresql(database_url: str, isolation: str) -> None:
    loop = asyncio.new_event_loop()
    pool = loop.run_until_complete(create_pool(database_url, f"{isolation}_ledger", min_size=1, max_size=4))
    try:
        loop.run_until_complete(migrate(pool, MIGRATIONS))
        run_state_machine_as_test(
            machine(PostgresBooks(pool), loop),
            settings=settings(
                max_examples=25, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
            ),
        )
    finally:
        loop.run_until_complete(pool.close())
        loop.close()
