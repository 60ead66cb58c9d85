"""PostgresLedger: the ledger unit of work on PostgreSQL, writing a consumed batch with a handful of statements."""

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from contracts.codec import encode
from ledger.adapters.parking import headers_json
from ledger.domain import (
    Account,
    AccountKind,
    BooksView,
    Changes,
    OrderBooks,
    ParkedRetry,
    PaymentFact,
    PendingBlock,
    Posted,
    Posting,
)
from servicekit.pages import Window
from servicekit.postgres import ConcurrentWrite
from servicekit.uow import PostgresUnitOfWork

# Everything that decides a batch, in one round trip: its orders' credits, compensations, blocks, payment facts,
# parked retries and the blocks waiting with them, its users' wallet currencies, and which of its wallets are frozen.
_BOOKS = """
SELECT 'credit' AS what, o.order_id AS key, t.transaction_id AS value, t.created_at AS at, a.user_id,
       a.currency::text AS currency, e.amount
FROM unnest($1::text[]) AS o(order_id)
CROSS JOIN LATERAL (SELECT transaction_id, created_at FROM transactions
                    WHERE order_id = o.order_id AND kind = 'credit' OFFSET 0) AS t
CROSS JOIN LATERAL (SELECT account_id, amount FROM entries WHERE transaction_id = t.transaction_id OFFSET 0) AS e
CROSS JOIN LATERAL (SELECT user_id, currency FROM accounts
                    WHERE account_id = e.account_id AND kind = 'wallet' OFFSET 0) AS a
UNION ALL
SELECT 'compensation', o.order_id, NULL, NULL, NULL, NULL, NULL FROM unnest($1::text[]) AS o(order_id)
WHERE EXISTS (SELECT FROM transactions t WHERE t.order_id = o.order_id AND t.kind = 'compensation' OFFSET 0)
UNION ALL
SELECT 'block', order_id, reason, NULL, NULL, NULL, NULL FROM credit_blocks WHERE order_id = ANY($1::text[])
UNION ALL
SELECT 'fact', order_id, provider_txn_id, NULL, user_id, currency::text, amount FROM payment_facts
WHERE order_id = ANY($1::text[])
UNION ALL
SELECT 'parked', order_id, provider_txn_id, NULL, user_id, currency::text, amount FROM parked_retries
WHERE order_id = ANY($1::text[])
UNION ALL
SELECT 'pending_block', order_id, block_reason, NULL, block_user_id, NULL, NULL FROM parked_retries
WHERE order_id = ANY($1::text[]) AND block_reason IS NOT NULL
UNION ALL
SELECT 'user', user_id, currency::text, NULL, NULL, NULL, NULL FROM users WHERE user_id = ANY($2::text[])
UNION ALL
SELECT 'frozen', account_id, NULL, NULL, NULL, NULL, NULL FROM accounts WHERE account_id = ANY($3::text[]) AND frozen
"""

_CREDITS_PAGE = """
SELECT t.transaction_id, t.order_id, t.created_at, a.user_id, a.currency::text AS currency, e.amount
FROM transactions t JOIN entries e USING (transaction_id) JOIN accounts a USING (account_id)
WHERE t.kind = 'credit' AND a.kind = 'wallet' AND t.created_at >= $1 AND t.created_at < $2
  AND (t.created_at, t.transaction_id) > ($3, $4)
ORDER BY t.created_at, t.transaction_id LIMIT $5
"""

# A batch's postings in one statement. Their unique (order_id, kind) makes each once per order: only the
# transactions new here get entries, and each account moves once, by the sum of its new entries, in the order
# given (the same order in every batch, so two batches never deadlock on accounts). The entries' foreign key to
# accounts is checked at commit (0004), so an entry may name an account this statement opens. The payment facts
# of the batch's newly paid orders ride along, so recording them costs no round trip of its own.
_POST = """
WITH tx AS (
    INSERT INTO transactions (transaction_id, order_id, kind, created_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
    ON CONFLICT DO NOTHING RETURNING transaction_id
), entered AS (
    INSERT INTO entries (transaction_id, account_id, amount)
    SELECT e.transaction_id, e.account_id, e.amount
    FROM unnest($5::text[], $6::text[], $7::bigint[]) WITH ORDINALITY AS e(transaction_id, account_id, amount, n)
    WHERE e.transaction_id IN (SELECT transaction_id FROM tx)
    ORDER BY e.n
    RETURNING account_id, amount
), moved AS (
    INSERT INTO accounts (account_id, kind, user_id, currency, balance)
    SELECT a.account_id, a.kind, a.user_id, a.currency, d.delta
    FROM unnest($8::text[], $9::text[], $10::text[], $11::text[])
         WITH ORDINALITY AS a(account_id, kind, user_id, currency, n)
    JOIN (SELECT account_id, sum(amount)::bigint AS delta FROM entered GROUP BY account_id) AS d USING (account_id)
    ORDER BY a.n
    ON CONFLICT (account_id) DO UPDATE SET balance = accounts.balance + EXCLUDED.balance
), facts AS (
    INSERT INTO payment_facts (order_id, user_id, amount, currency, provider_txn_id)
    SELECT * FROM unnest($12::text[], $13::text[], $14::bigint[], $15::text[], $16::text[])
    ON CONFLICT DO NOTHING
)
SELECT count(*) FROM tx
"""

# Retries parked to wait for their order's payment (one row per order: the first retry's claim and record, the
# others counted), and the parked retries of orders whose payment the batch recorded, cleared.
_PARK = """
WITH cleared AS (DELETE FROM parked_retries WHERE order_id = ANY($9::text[]))
INSERT INTO parked_retries AS p
    (order_id, event_id, user_id, amount, currency, provider_txn_id, record_value, record_headers, retries)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::bytea[],
                     $8::jsonb[], $10::integer[])
ON CONFLICT (order_id) DO UPDATE SET retries = p.retries + EXCLUDED.retries
"""

# Blocks that wait with their order's parked retry for its payment (the row is there: parked before or in this batch).
_PENDING_BLOCKS = """
UPDATE parked_retries p SET block_user_id = b.user_id, block_reason = b.reason
FROM unnest($1::text[], $2::text[], $3::text[]) AS b(order_id, user_id, reason) WHERE p.order_id = b.order_id
"""

# A batch's other facts in one statement: users registered by their first credit (the ones returned; a user someone
# else registered meanwhile is not), blocks (new, or with the reason the batch decided), credits dropped on purpose,
# and blocks a person's re-drive lifted (never the orders of `blocks`: the two sets are disjoint, Changes.unblocks).
_FACTS = """
WITH registered AS (
    INSERT INTO users (user_id, currency) SELECT * FROM unnest($1::text[], $2::text[])
    ON CONFLICT DO NOTHING RETURNING user_id
), blocked AS (
    INSERT INTO credit_blocks (order_id, reason) SELECT * FROM unnest($3::text[], $4::text[])
    ON CONFLICT (order_id) DO UPDATE SET reason = EXCLUDED.reason
), dropped AS (
    INSERT INTO injected_faults (order_id, kind) SELECT o, 'credit_dropped' FROM unnest($5::text[]) AS o
    ON CONFLICT DO NOTHING
), unblocked AS (
    DELETE FROM credit_blocks WHERE order_id = ANY($6::text[])
)
SELECT user_id FROM registered
"""


def _account_order(account: Account) -> tuple[bool, str]:
    """The one order every batch moves accounts in: wallets first, the platform's (which every credit of a
    currency touches) last, so a batch holds those rows for the shortest time."""
    return account.kind is not AccountKind.WALLET, account.account_id


def _posting_columns(postings: Sequence[tuple[Posting, datetime]]) -> list[list[Any]]:
    """The arrays of _POST: transactions, entries, and the accounts they touch in `_account_order`."""
    entry_tx: list[str] = []
    entry_account: list[str] = []
    entry_amount: list[int] = []
    accounts: dict[str, Account] = {}
    for posting, _ in postings:
        transaction_id = posting.transaction_id
        for entry in posting.entries:
            account = entry.account
            entry_tx.append(transaction_id)
            entry_account.append(account.account_id)
            entry_amount.append(entry.amount)
            accounts[account.account_id] = account
    touched = sorted(accounts.values(), key=_account_order)
    return [
        [posting.transaction_id for posting, _ in postings],
        [posting.order_id for posting, _ in postings],
        [posting.kind for posting, _ in postings],
        [at for _, at in postings],
        entry_tx,
        entry_account,
        entry_amount,
        [a.account_id for a in touched],
        [a.kind.value for a in touched],
        [a.user_id for a in touched],
        [a.currency for a in touched],
    ]


def _fact_columns(facts: dict[str, PaymentFact]) -> list[list[Any]]:
    """The arrays of _POST's payment facts: order ids, users, amounts, currencies, provider transaction ids."""
    return [
        list(facts),
        [f.user_id for f in facts.values()],
        [f.amount for f in facts.values()],
        [f.currency for f in facts.values()],
        [f.provider_txn_id for f in facts.values()],
    ]


def _view(rows: Sequence[Any]) -> BooksView:
    view = BooksView()
    for row in rows:
        what, key = row["what"], row["key"]
        if what == "credit":
            posted = Posted(row["value"], row["user_id"], row["amount"], row["currency"], row["at"])
            view.orders.setdefault(key, OrderBooks()).credit = posted
        elif what == "compensation":
            view.orders.setdefault(key, OrderBooks()).compensated = True
        elif what == "block":
            view.orders.setdefault(key, OrderBooks()).blocked = row["value"]
        elif what == "fact":
            view.facts[key] = PaymentFact(row["user_id"], row["amount"], row["currency"], row["value"])
        elif what == "parked":
            view.parked[key] = PaymentFact(row["user_id"], row["amount"], row["currency"], row["value"])
        elif what == "pending_block":
            view.pending_blocks[key] = PendingBlock(row["user_id"], row["value"])
        elif what == "user":
            view.users[key] = row["value"]
        else:
            view.frozen.add(key)
    return view


class PostgresLedger(PostgresUnitOfWork):
    """Accounts, transactions and entries, in one transaction with the processed event ids and the outbox."""

    async def __aenter__(self) -> "PostgresLedger":
        await super().__aenter__()
        return self

    async def lock_orders(self, order_ids: Collection[str]) -> None:
        await self.conn.execute("SELECT ledger_lock_orders($1::text[])", list(order_ids))

    async def books_of(self, *, orders: Collection[str], users: Collection[str], wallets: Collection[str]) -> BooksView:
        return _view(await self.conn.fetch(_BOOKS, list(orders), list(users), list(wallets)))

    async def apply(self, changes: Changes) -> None:
        if changes.registrations or changes.blocks or changes.dropped or changes.unblocks:
            # Users in one order in every batch: two batches registering the same new users would otherwise each
            # wait for the other's insert of the user it reaches second (a deadlock PostgreSQL breaks after a second).
            users = sorted(changes.registrations)
            registered = await self.conn.fetch(
                _FACTS,
                users,
                [changes.registrations[u] for u in users],
                list(changes.blocks),
                list(changes.blocks.values()),
                list(dict.fromkeys(changes.dropped)),
                sorted(changes.unblocks),
            )
            await self._registered_meanwhile(changes.registrations, {r["user_id"] for r in registered})
        if changes.postings or changes.facts:
            columns = _posting_columns(changes.postings) + _fact_columns(changes.facts)
            posted = await self.conn.fetchval(_POST, *columns)
            if posted != len(changes.postings):
                raise ConcurrentWrite(f"{len(changes.postings) - posted} postings were written meanwhile")
        if changes.parked or changes.unparked:
            await self._park(changes)
        if changes.pending_blocks:
            blocks = changes.pending_blocks
            await self.conn.execute(
                _PENDING_BLOCKS, list(blocks), [b.user_id for b in blocks.values()], [b.reason for b in blocks.values()]
            )

    async def _park(self, changes: Changes) -> None:
        """One row per order (its first retry's, counting the others); none for an order whose payment came later
        in the same batch."""
        unparked = list(dict.fromkeys(changes.unparked))
        first: dict[str, ParkedRetry] = {}
        retries: dict[str, int] = {}
        for parked in changes.parked:
            order_id = parked.message.order_id
            if order_id not in unparked:
                first.setdefault(order_id, parked)
                retries[order_id] = retries.get(order_id, 0) + 1
        columns: list[list[Any]] = [[] for _ in range(8)]
        for parked in first.values():
            record, claim = encode(parked.message, parked.envelope), parked.claim
            values: tuple[object, ...] = (parked.message.order_id, parked.envelope.event_id, claim.user_id)
            values += (claim.amount, claim.currency, claim.provider_txn_id, record.value, headers_json(record.headers))
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        await self.conn.execute(_PARK, *columns, unparked, list(retries.values()))

    async def _registered_meanwhile(self, registrations: dict[str, str], registered: set[str]) -> None:
        """Users another writer registered since the batch read the books (its insert waited for that commit):
        the batch's decisions stand if they hold the currency it chose; otherwise it must be decided again."""
        others = sorted(registrations.keys() - registered)
        if not others:
            return
        rows = await self.conn.fetch("SELECT user_id, currency FROM users WHERE user_id = ANY($1::text[])", others)
        held = {r["user_id"]: r["currency"] for r in rows}
        differ = [u for u in others if held.get(u) != registrations[u]]
        if differ:
            raise ConcurrentWrite(f"users {differ} were registered meanwhile in another currency")

    async def register_user(self, user_id: str, currency: str) -> str:
        """Register the user in `currency` unless they are registered already; the currency their wallet is kept in."""
        held: str | None = await self.conn.fetchval(
            "WITH new AS (INSERT INTO users (user_id, currency) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            " RETURNING currency) SELECT currency FROM new UNION ALL SELECT currency FROM users WHERE user_id = $1",
            user_id,
            currency,
        )
        if held is None:
            # Another transaction registered the user and committed while the insert waited for it: the statement's
            # snapshot is older than that commit and sees no user. A new statement sees it (read committed).
            held = await self.conn.fetchval("SELECT currency FROM users WHERE user_id = $1", user_id)
        return held

    async def wallet_balances(self, user_id: str) -> dict[str, int]:
        rows = await self.conn.fetch(
            "SELECT currency, balance FROM accounts WHERE kind = 'wallet' AND user_id = $1", user_id
        )
        return {r["currency"]: r["balance"] for r in rows}

    async def credits_between(self, page: Window) -> list[dict[str, Any]]:
        """One keyset page of the wallet credits posted in the window, by (created_at, transaction_id)."""
        rows = await self.conn.fetch(_CREDITS_PAGE, page.since, page.until, page.after.at, page.after.id, page.limit)
        return [dict(row) for row in rows]

    async def order_transactions(self, order_id: str) -> list[dict[str, Any]]:
        rows = await self.conn.fetch(
            "SELECT t.transaction_id, t.kind, t.created_at, e.account_id, e.amount, a.currency FROM transactions t"
            " JOIN entries e USING (transaction_id) JOIN accounts a USING (account_id) WHERE t.order_id = $1"
            " ORDER BY t.created_at, t.transaction_id, e.amount",
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
                    "currency": r["currency"],  # one per transaction: its entries move one currency
                    "entries": [],
                },
            )
            tx["entries"].append({"account_id": r["account_id"], "amount": r["amount"]})
        return list(out.values())

    async def injected_faults(self) -> list[str]:
        return [r["order_id"] for r in await self.conn.fetch("SELECT order_id FROM injected_faults ORDER BY order_id")]
