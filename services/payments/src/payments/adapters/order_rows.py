"""How an order is a row of the orders table, and rows become the column arrays one unnest(...) takes."""

from collections.abc import Sequence

import asyncpg

from payments.domain import Order, PaymentStatus

COLUMNS = (
    "order_id, user_id, amount, currency, channel, payment_status, status, status_sequence,"
    " provider, provider_txn_id, created_at, paid_at, product, review_status, review_reason, review_expected_at,"
    " reviewed_at, reviewed_by_key_id, reviewed_by_key_name, reviewed_reason"
)


def order_of(row: asyncpg.Record) -> Order:
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
        reviewed_by_key_id=row["reviewed_by_key_id"],
        reviewed_by_key_name=row["reviewed_by_key_name"],
        reviewed_reason=row["reviewed_reason"],
    )


def params(first: int, types: Sequence[str]) -> str:
    return ", ".join(f"${first + i}::{t}[]" for i, t in enumerate(types))


ORDER_TYPES = (
    "text", "text", "bigint", "text", "text", "text", "text", "integer", "text", "text", "timestamptz",
    "timestamptz", "text", "text", "text", "timestamptz", "timestamptz", "text", "text", "text",
)  # fmt: skip


def columns(rows: Sequence[Sequence[object]], width: int) -> list[list[object]]:
    """Rows as column arrays (one unnest parameter each)."""
    return [[row[i] for row in rows] for i in range(width)]


def order_row(o: Order) -> tuple[object, ...]:
    return (
        o.order_id, o.user_id, o.amount, o.currency, o.channel, o.payment_status.value, o.status, o.status_sequence,
        o.provider, o.provider_txn_id, o.created_at, o.paid_at, o.product, o.review_status, o.review_reason,
        o.review_expected_at, o.reviewed_at, o.reviewed_by_key_id, o.reviewed_by_key_name, o.reviewed_reason,
    )  # fmt: skip
