"""PostgresLedger: the ledger unit of work on PostgreSQL."""

from typing import Any

from ledger.domain import CreditContext, Posted, Posting
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


class PostgresLedger(PostgresUnitOfWork):
    """Accounts, transactions and entries, in one transaction with the outbox."""

    async def __aenter__(self) -> "PostgresLedger":
        await super().__aenter__()
        return self

    async def post(self, posting: Posting) -> bool:
        inserted = await self.conn.fetchval(
            "INSERT INTO transactions (transaction_id, order_id, kind) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING 1",
            posting.transaction_id,
            posting.order_id,
            posting.kind,
        )
        if inserted is None:
            return False
        accounts = sorted({e.account for e in posting.entries}, key=lambda a: a.account_id)
        await self.conn.executemany(
            "INSERT INTO accounts (account_id, kind, user_id, currency) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (account_id) DO NOTHING",
            [(a.account_id, a.kind.value, a.user_id, a.currency) for a in accounts],
        )
        await self.conn.executemany(
            "INSERT INTO entries (transaction_id, account_id, amount) VALUES ($1, $2, $3)",
            [(posting.transaction_id, e.account.account_id, e.amount) for e in posting.entries],
        )
        # Balances move in account-id order so that concurrent postings never deadlock.
        deltas: dict[str, int] = {}
        for e in posting.entries:
            deltas[e.account.account_id] = deltas.get(e.account.account_id, 0) + e.amount
        await self.conn.executemany(
            "UPDATE accounts SET balance = balance + $2 WHERE account_id = $1", sorted(deltas.items())
        )
        return True

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

    async def block_of(self, order_id: str) -> str | None:
        reason: str | None = await self.conn.fetchval("SELECT reason FROM credit_blocks WHERE order_id = $1", order_id)
        return reason

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
