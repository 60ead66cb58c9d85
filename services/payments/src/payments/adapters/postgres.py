"""PostgresPayments: the payments unit of work on PostgreSQL."""

import asyncpg

from payments.domain import Order, PaymentStatus
from payments.ports import RefundAnswer
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


class PostgresPayments(PostgresUnitOfWork):
    """Orders, idempotency keys and the callback audit, in one transaction with the outbox."""

    async def __aenter__(self) -> "PostgresPayments":
        await super().__aenter__()
        return self

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        lock = " FOR UPDATE" if for_update else ""
        query = f"SELECT {_COLUMNS} FROM orders WHERE order_id = $1{lock}"  # noqa: S608 - constants only
        row = await self.conn.fetchrow(query, order_id)
        return None if row is None else _order(row)

    async def add(self, order: Order) -> None:
        await self.conn.execute(
            f"INSERT INTO orders ({_COLUMNS})"  # noqa: S608 - constants only
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            order.order_id,
            order.user_id,
            order.amount,
            order.currency,
            order.channel,
            order.payment_status.value,
            order.status,
            order.status_sequence,
            order.provider,
            order.provider_txn_id,
            order.created_at,
            order.paid_at,
            order.product,
            order.review_status,
            order.review_reason,
            order.review_expected_at,
            order.reviewed_at,
        )

    async def save(self, order: Order) -> None:
        await self.conn.execute(
            "UPDATE orders SET payment_status = $2, status = $3, status_sequence = $4, provider = $5,"
            " provider_txn_id = $6, paid_at = $7, review_status = $8, review_reason = $9, review_expected_at = $10,"
            " reviewed_at = $11, updated_at = now() WHERE order_id = $1",
            order.order_id,
            order.payment_status.value,
            order.status,
            order.status_sequence,
            order.provider,
            order.provider_txn_id,
            order.paid_at,
            order.review_status,
            order.review_reason,
            order.review_expected_at,
            order.reviewed_at,
        )

    async def has_cleared_topup(self, user_id: str, excluding: str) -> bool:
        cleared: bool = await self.conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM orders WHERE user_id = $1 AND order_id <> $2"
            " AND payment_status = 'succeeded' AND (review_status IS NULL OR review_status = 'released'))",
            user_id,
            excluding,
        )
        return cleared

    async def claim_idempotency_key(self, key: str, fingerprint: str, order_id: str) -> tuple[str, str]:
        await self.conn.execute(
            "INSERT INTO idempotency_keys (key, request_fingerprint, order_id) VALUES ($1, $2, $3)"
            " ON CONFLICT (key) DO NOTHING",
            key,
            fingerprint,
            order_id,
        )
        row = await self.conn.fetchrow("SELECT request_fingerprint, order_id FROM idempotency_keys WHERE key = $1", key)
        assert row is not None
        return row["request_fingerprint"], row["order_id"]

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
        await self.conn.execute(
            "INSERT INTO callbacks (provider, order_id, outcome, reason, signature_header, body)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            provider,
            order_id,
            outcome,
            reason,
            signature,
            body,
        )
