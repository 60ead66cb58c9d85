"""PostgresPayments: the payments unit of work on PostgreSQL."""

from collections.abc import Collection, Sequence
from types import TracebackType

import asyncpg

from payments.domain import Order, PaymentStatus
from payments.ports import KeyHolder, NewOrder, RefundAnswer
from servicekit.uow import PostgresUnitOfWork

_COLUMNS = (
    "order_id, user_id, amount, currency, channel, payment_status, status, status_sequence,"
    " provider, provider_txn_id, created_at, paid_at, product, review_status, review_reason, review_expected_at,"
    " reviewed_at"
)


def _order(row: asyncpg.Record) -> Order:
    return Order(
        order_id=row["order_id"],
        user_id=row["user_id"],
        amount=row["amount"],
        currency=row["currency"],
        channel=row["channel"],
        payment_status=PaymentStatus(row["payment_status"]),
        status=row["status"],
        status_sequence=row["status_sequence"],
        provider=row["provider"],
        provider_txn_id=row["provider_txn_id"],
        created_at=row["created_at"],
        paid_at=row["paid_at"],
        product=row["product"],
        review_status=row["review_status"],
        review_reason=row["review_reason"],
        review_expected_at=row["review_expected_at"],
        reviewed_at=row["reviewed_at"],
    )


def _params(first: int, types: Sequence[str]) -> str:
    return ", ".join(f"${first + i}::{t}[]" for i, t in enumerate(types))


_ORDER_TYPES = (
    "text", "text", "bigint", "text", "text", "text", "text", "integer", "text", "text", "timestamptz",
    "timestamptz", "text", "text", "text", "timestamptz", "timestamptz",
)  # fmt: skip
# Keys are claimed in key order (two groups claiming the same keys take them in the same order) and, for the
# same key twice in a group, the first request wins; an order is inserted only if its key was claimed.
_PLACE = (
    f"WITH req AS (SELECT * FROM unnest({_params(1, (*_ORDER_TYPES, 'text', 'text'))})"  # noqa: S608 - constants
    f" WITH ORDINALITY AS r({_COLUMNS}, key, fingerprint, n)),"
    " claimed AS (INSERT INTO idempotency_keys (key, request_fingerprint, order_id)"
    " SELECT key, fingerprint, order_id FROM req WHERE key IS NOT NULL ORDER BY key, n"
    " ON CONFLICT (key) DO NOTHING RETURNING order_id)"
    f" INSERT INTO orders ({_COLUMNS}) SELECT {_COLUMNS} FROM req"
    " WHERE key IS NULL OR order_id IN (SELECT order_id FROM claimed) ORDER BY n RETURNING order_id"
)
_SAVE_TYPES = (
    "text", "text", "text", "integer", "text", "text", "timestamptz", "text", "text", "timestamptz", "timestamptz",
)  # fmt: skip
_SAVE = (
    "UPDATE orders o SET payment_status = s.payment_status, status = s.status, status_sequence = s.status_sequence,"  # noqa: S608
    " provider = s.provider, provider_txn_id = s.provider_txn_id, paid_at = s.paid_at, review_status ="
    " s.review_status, review_reason = s.review_reason, review_expected_at = s.review_expected_at, reviewed_at ="
    f" s.reviewed_at, updated_at = now() FROM unnest({_params(1, _SAVE_TYPES)}) AS s(order_id, payment_status,"
    " status, status_sequence, provider, provider_txn_id, paid_at, review_status, review_reason, review_expected_at,"
    " reviewed_at) WHERE o.order_id = s.order_id"
)
_AUDIT_TYPES = ("text", "text", "text", "text", "text", "bytea")


def _audit(first: int) -> str:
    return (
        "INSERT INTO callbacks (provider, order_id, outcome, reason, signature_header, body) SELECT p, o, c, r, s, b"  # noqa: S608
        f" FROM unnest({_params(first, _AUDIT_TYPES)}) WITH ORDINALITY AS a(p, o, c, r, s, b, n) ORDER BY n"
    )


_WRITES = {
    (True, False): _SAVE,
    (False, True): _audit(1),
    (True, True): f"WITH saved AS ({_SAVE}) {_audit(len(_SAVE_TYPES) + 1)}",
}
_CLEARED = (
    "SELECT DISTINCT user_id FROM orders WHERE user_id = ANY($1::text[]) AND order_id <> ALL($2::text[])"
    " AND payment_status = 'succeeded' AND (review_status IS NULL OR review_status = 'released')"
)


class PostgresStatusBook:
    """Order statuses on PostgreSQL: one statement per change, outside any consumer transaction (a change is
    idempotent by its sequence, so it needs no record of the event and is durable before the offset commit)."""

    _APPLY = (
        "WITH target AS (SELECT 1 FROM orders WHERE order_id = $1),"
        " changed AS (UPDATE orders SET status = $2, status_sequence = $3, updated_at = now()"
        " WHERE order_id = $1 AND status_sequence < $3 RETURNING 1)"
        " SELECT EXISTS (SELECT 1 FROM target) AS known, EXISTS (SELECT 1 FROM changed) AS applied"
    )

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def apply(self, order_id: str, status: str, sequence: int) -> bool | None:
        row = await self._pool.fetchrow(self._APPLY, order_id, status, sequence)
        assert row is not None
        return bool(row["applied"]) if row["known"] else None


async def read_order(pool: asyncpg.Pool, order_id: str) -> Order | None:
    """One order, read outside any transaction (one round trip)."""
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM orders WHERE order_id = $1", order_id)  # noqa: S608
    return None if row is None else _order(row)


class PostgresPayments(PostgresUnitOfWork):
    """Orders, idempotency keys and the callback audit, in one transaction with the outbox. Order changes
    and audit rows are written together in one statement when the unit commits."""

    async def __aenter__(self) -> "PostgresPayments":
        await super().__aenter__()
        self._saved: dict[str, Order] = {}
        self._audited: list[tuple[str, str | None, str, str, str | None, bytes]] = []
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            try:
                await self._write()
            except BaseException as error:
                await super().__aexit__(type(error), error, error.__traceback__)
                raise
        await super().__aexit__(exc_type, exc, tb)

    async def _write(self) -> None:
        kinds = (bool(self._saved), bool(self._audited))
        if not any(kinds):
            return
        saved = [_save_row(o) for o in self._saved.values()]
        arrays = _columns(saved, len(_SAVE_TYPES)) if saved else []
        if self._audited:
            arrays += _columns(self._audited, len(_AUDIT_TYPES))
        await self.conn.execute(_WRITES[kinds], *arrays)

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        lock = " FOR UPDATE" if for_update else ""
        query = f"SELECT {_COLUMNS} FROM orders WHERE order_id = $1{lock}"  # noqa: S608 - constants only
        row = await self.conn.fetchrow(query, order_id)
        return None if row is None else _order(row)

    async def get_many(self, order_ids: Collection[str], *, for_update: bool = False) -> dict[str, Order]:
        if not order_ids:
            return {}
        lock = " ORDER BY order_id FOR UPDATE" if for_update else ""
        query = f"SELECT {_COLUMNS} FROM orders WHERE order_id = ANY($1::text[]){lock}"  # noqa: S608 - constants only
        return {row["order_id"]: _order(row) for row in await self.conn.fetch(query, list(order_ids))}

    async def place(self, orders: Sequence[NewOrder]) -> list[KeyHolder | None]:
        rows = [(*_order_row(n.order), n.key, n.fingerprint) for n in orders]
        placed = {r["order_id"] for r in await self.conn.fetch(_PLACE, *_columns(rows, len(_ORDER_TYPES) + 2))}
        lost = [n.key for n in orders if n.order.order_id not in placed]
        holders: dict[str | None, KeyHolder] = {}
        if lost:
            held = await self.conn.fetch(
                "SELECT key, request_fingerprint, order_id FROM idempotency_keys WHERE key = ANY($1::text[])", lost
            )
            holders = {r["key"]: KeyHolder(r["request_fingerprint"], r["order_id"]) for r in held}
        return [None if n.order.order_id in placed else holders[n.key] for n in orders]

    async def save(self, order: Order) -> None:
        self._saved[order.order_id] = order

    async def cleared_users(self, user_ids: Collection[str], excluding: Collection[str]) -> set[str]:
        rows = await self.conn.fetch(_CLEARED, list(user_ids), list(excluding))
        return {row["user_id"] for row in rows}

    async def refund_of(self, order_id: str) -> RefundAnswer | None:
        row = await self.conn.fetchrow("SELECT refund_id, status, reason FROM refunds WHERE order_id = $1", order_id)
        return None if row is None else RefundAnswer(row["status"], row["refund_id"] or "", row["reason"])

    async def save_refund(self, order_id: str, answer: RefundAnswer, attempts: int) -> None:
        await self.conn.execute(
            "INSERT INTO refunds (order_id, refund_id, status, reason, attempts) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (order_id) DO NOTHING",
            order_id,
            answer.refund_id or None,
            answer.status,
            answer.reason,
            attempts,
        )

    async def record_callback(
        self, *, provider: str, order_id: str | None, outcome: str, reason: str, signature: str | None, body: bytes
    ) -> None:
        self._audited.append((provider, order_id, outcome, reason, signature, body))


def _columns(rows: Sequence[Sequence[object]], width: int) -> list[list[object]]:
    """Rows as column arrays (one unnest parameter each)."""
    return [[row[i] for row in rows] for i in range(width)]


def _order_row(o: Order) -> tuple[object, ...]:
    return (
        o.order_id, o.user_id, o.amount, o.currency, o.channel, o.payment_status.value, o.status, o.status_sequence,
        o.provider, o.provider_txn_id, o.created_at, o.paid_at, o.product, o.review_status, o.review_reason,
        o.review_expected_at, o.reviewed_at,
    )  # fmt: skip


def _save_row(o: Order) -> tuple[object, ...]:
    return (
        o.order_id, o.payment_status.value, o.status, o.status_sequence, o.provider, o.provider_txn_id, o.paid_at,
        o.review_status, o.review_reason, o.review_expected_at, o.reviewed_at,
    )  # fmt: skip
