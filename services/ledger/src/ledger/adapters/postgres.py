"""PostgresLedger: the ledger unit of work on PostgreSQL."""

from typing import Any

from asyncpg.pool import PoolConnectionProxy

from ledger.domain import AccountKind, CreditContext, Posted, Posting
from servicekit.uow import PostgresUnitOfWork

# One round trip for everything that decides a credit: the order's credit, its block, the user's wallet.
_CREDIT_CONTEXT = (
    "SELECT c.transaction_id, c.created_at, c.user_id, c.currency, c.amount,"
    " (SELECT reason FROM credit_blocks WHERE order_id = $1) AS blocked,"
    " (SELECT currency FROM users WHERE user_id = $2) AS user_currency,"
    " coalesce((SELECT frozen FROM accounts WHERE account_id = $3), false) AS frozen"
    " FROM (SELECT 1) AS one LEFT JOIN LATERAL ("
    "  SELECT t.transaction_id, t.created_at, a.user_id, a.currency, e.amount FROM transactions t"
    "  JOIN entries e USING (transaction_id) JOIN accounts a USING (account_id)"
    "  WHERE t.order_id = $1 AND t.kind = 'credit' AND a.kind = 'wallet') AS c ON true"
)


# A posting in one round trip: the transaction row (its unique (order_id, kind) makes it once per order), the
# given accounts opened with their delta or moved by it, and the entries; nothing at all when the posting
# exists. The entries' foreign key to accounts is checked at commit, so an account may be opened later in the
# transaction (_MOVE, for the platform accounts of a batch).
_POST = (
    "WITH tx AS (INSERT INTO transactions (transaction_id, order_id, kind) VALUES ($1, $2, $3)"
    "  ON CONFLICT DO NOTHING RETURNING transaction_id),"
    " moved AS (INSERT INTO accounts (account_id, kind, user_id, currency, balance)"
    "  SELECT a.* FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[])"
    "   AS a(account_id, kind, user_id, currency, delta) WHERE EXISTS (SELECT 1 FROM tx) ORDER BY a.account_id"
    "  ON CONFLICT (account_id) DO UPDATE SET balance = accounts.balance + EXCLUDED.balance RETURNING 1),"
    " entered AS (INSERT INTO entries (transaction_id, account_id, amount)"
    "  SELECT tx.transaction_id, e.account_id, e.amount FROM tx, unnest($9::text[], $10::bigint[])"
    "   AS e(account_id, amount) RETURNING 1)"
    " SELECT count(*) FROM tx"
)

_MOVE = (
    "INSERT INTO accounts (account_id, kind, user_id, currency, balance)"
    " SELECT a.* FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])"
    "  AS a(account_id, kind, user_id, currency, delta) ORDER BY a.account_id"
    " ON CONFLICT (account_id) DO UPDATE SET balance = accounts.balance + EXCLUDED.balance"
)

Move = tuple[str, str, str | None, str, int]
"""(account id, kind, user id, currency, balance delta)."""


def _moves(posting: Posting) -> list[Move]:
    """What the posting does to each account, in account-id order (so concurrent postings never deadlock)."""
    deltas: dict[str, int] = {}
    for e in posting.entries:
        deltas[e.account.account_id] = deltas.get(e.account.account_id, 0) + e.amount
    accounts = sorted({e.account for e in posting.entries}, key=lambda a: a.account_id)
    return [(a.account_id, a.kind.value, a.user_id, a.currency, deltas[a.account_id]) for a in accounts]


def _columns(moves: list[Move]) -> tuple[list[Any], ...]:
    return tuple(list(column) for column in zip(*moves, strict=True)) if moves else ([], [], [], [], [])


async def _move_platform_accounts(conn: PoolConnectionProxy, moves: list[Move]) -> None:
    """A batch's platform balance moves, summed per account, in one statement just before it commits."""
    summed: dict[str, Move] = {}
    for account_id, kind, user_id, currency, delta in moves:
        held = summed.get(account_id)
        summed[account_id] = (account_id, kind, user_id, currency, delta + (held[4] if held else 0))
    await conn.execute(_MOVE, *_columns(sorted(summed.values())))


class PostgresLedger(PostgresUnitOfWork):
    """Accounts, transactions and entries, in one transaction with the outbox."""

    async def __aenter__(self) -> "PostgresLedger":
        await super().__aenter__()
        return self

    async def post(self, posting: Posting) -> bool:
        moves = _moves(posting)
        # Inside a batch the platform accounts move at its end (0004_deferred_platform_balances.sql).
        now = [m for m in moves if m[1] == AccountKind.WALLET.value] if self.in_batch else moves
        inserted = await self.conn.fetchval(
            _POST,
            posting.transaction_id,
            posting.order_id,
            posting.kind,
            *_columns(now),
            [e.account.account_id for e in posting.entries],
            [e.amount for e in posting.entries],
        )
        if inserted and self.in_batch:
            for move in moves:
                if move[1] != AccountKind.WALLET.value:
                    self.defer_to_batch_end(_move_platform_accounts, move)
        return bool(inserted)

    async def lock_order(self, order_id: str) -> None:
        await self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('ledger-order:' || $1))", order_id)

    async def credit_of(self, order_id: str) -> Posted | None:
        row = await self.conn.fetchrow(
            "SELECT t.transaction_id, t.created_at, a.user_id, a.currency, e.amount FROM transactions t"
            " JOIN entries e USING (transaction_id) JOIN accounts a USING (account_id)"
            " WHERE t.order_id = $1 AND t.kind = 'credit' AND a.kind = 'wallet'",
            order_id,
        )
        if row is None:
            return None
        return Posted(row["transaction_id"], row["user_id"], row["amount"], row["currency"], row["created_at"])

    async def block(self, order_id: str, reason: str, *, overwrite: bool = False) -> None:
        on_conflict = "DO UPDATE SET reason = EXCLUDED.reason" if overwrite else "DO NOTHING"
        await self.conn.execute(
            f"INSERT INTO credit_blocks (order_id, reason) VALUES ($1, $2) ON CONFLICT (order_id) {on_conflict}",  # noqa: S608
            order_id,
            reason,
        )

    async def credit_context(self, order_id: str, user_id: str, currency: str) -> CreditContext:
        row = await self.conn.fetchrow(_CREDIT_CONTEXT, order_id, user_id, f"wallet:{user_id}:{currency}")
        assert row is not None
        credit = None
        if row["transaction_id"] is not None:
            credit = Posted(row["transaction_id"], row["user_id"], row["amount"], row["currency"], row["created_at"])
        return CreditContext(credit, row["blocked"], row["user_currency"], row["frozen"])

    async def register_user(self, user_id: str, currency: str) -> str:
        held: str = await self.conn.fetchval(
            "WITH new AS (INSERT INTO users (user_id, currency) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            " RETURNING currency) SELECT currency FROM new UNION ALL SELECT currency FROM users WHERE user_id = $1",
            user_id,
            currency,
        )
        return held

    async def record_fault(self, order_id: str, kind: str) -> None:
        await self.conn.execute(
            "INSERT INTO injected_faults (order_id, kind) VALUES ($1, $2) ON CONFLICT DO NOTHING", order_id, kind
        )

    async def wallet_balances(self, user_id: str) -> dict[str, int]:
        rows = await self.conn.fetch(
            "SELECT currency, balance FROM accounts WHERE kind = 'wallet' AND user_id = $1", user_id
        )
        return {r["currency"]: r["balance"] for r in rows}

    async def order_transactions(self, order_id: str) -> list[dict[str, Any]]:
        rows = await self.conn.fetch(
            "SELECT t.transaction_id, t.kind, t.created_at, e.account_id, e.amount FROM transactions t"
            " JOIN entries e USING (transaction_id) WHERE t.order_id = $1 ORDER BY t.created_at, e.id",
            order_id,
        )
        out: dict[str, dict[str, Any]] = {}
        for r in rows:
            tx = out.setdefault(
                r["transaction_id"],
                {
                    "transaction_id": r["transaction_id"],
                    "kind": r["kind"],
                    "created_at": r["created_at"].isoformat(),
                    "entries": [],
                },
            )
            tx["entries"].append({"account_id": r["account_id"], "amount": r["amount"]})
        return list(out.values())

    async def injected_faults(self) -> list[str]:
        return [r["order_id"] for r in await self.conn.fetch("SELECT order_id FROM injected_faults ORDER BY order_id")]
