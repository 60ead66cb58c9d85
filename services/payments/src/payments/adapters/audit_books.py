"""PostgresAuditBooks: what the money audit reads of payments' own tables (paid orders with their refunds, in
keyset pages), how it re-announces a payment (through the outbox), and its runs (one at a time, recorded)."""

import contextlib
import zlib
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from payments.adapters.postgres import PostgresPayments
from payments.announcements import announce_payment
from payments.audit import PaidOrder, Refund
from payments.auditing import NOT_TO_CREDIT, AuditOutcome, PaidRecord, Trigger
from payments.domain import REFUNDS_IN_FLIGHT, PaymentStatus
from servicekit.outbox import Connection
from servicekit.pages import Cursor, Window

_PAID = (
    "SELECT o.order_id, o.user_id, o.amount, o.currency::text AS currency, o.channel, o.provider, o.provider_txn_id,"
    " o.paid_at, o.review_status, r.status AS refund_status, r.refund_id, r.created_at AS refunded_at,"
    # When payments recorded the payment: its applied callback's or query answer's arrival, or the review's release.
    " greatest(o.reviewed_at, (SELECT min(c.received_at) FROM callbacks c WHERE c.order_id = o.order_id"
    " AND c.outcome = 'paid')) AS recorded_at"
    " FROM orders o LEFT JOIN refunds r USING (order_id) WHERE o.payment_status = 'succeeded'"
)
_PAID_PAGE = (
    f"{_PAID} AND o.paid_at >= $1 AND o.paid_at < $2 AND (o.paid_at, o.order_id) > ($3, $4)"
    " ORDER BY o.paid_at, o.order_id LIMIT $5"
)
_PAID_BY_ID = f"{_PAID} AND o.order_id = ANY($1::text[])"
# Paid before the window, its review decided in it (index orders_reviewed_at): a release's PaymentSucceeded went out
# then; a rejection's refund is owed from then.
_REVIEWED = (
    f"{_PAID} AND o.review_status IN ('released', 'rejected') AND o.reviewed_at >= $1 AND o.reviewed_at < $2"
    " AND o.paid_at < $1"
)
_RECORD_RUN = (
    "INSERT INTO audit_runs (trigger, since, until, started_at, counts, redriven, in_grace, refunds_in_flight)"
    " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8)"
)
_LAST_SCHEDULED = "SELECT max(started_at) FROM audit_runs WHERE trigger = 'schedule'"
_LATEST = "SELECT started_at, counts, refunds_in_flight FROM audit_runs ORDER BY started_at DESC, id DESC LIMIT 1"
PAGE = 1000


@dataclass(frozen=True, slots=True)
class RecordedRun:
    """A money audit as recorded in audit_runs: when it started, its findings by kind (every kind it knew), and
    the orders it did not judge because their refund was in flight at the provider."""

    started_at: datetime
    counts: dict[str, int]
    refunds_in_flight: int = 0


def record_of(row: asyncpg.Record | dict[str, Any]) -> PaidRecord:
    recorded_at = row.get("recorded_at")
    order = PaidOrder(row["order_id"], row["user_id"], row["amount"], row["currency"], row["paid_at"], recorded_at)
    refund = None
    if row["refund_status"] is not None:
        status = row["refund_status"]
        refund = Refund(
            row["order_id"], row["amount"], row["currency"], status == "succeeded", status in REFUNDS_IN_FLIGHT
        )
    return PaidRecord(order, row["review_status"], refund)


class PostgresAuditBooks:
    """The audit's side of payments' database: reads, re-drives, the run lock and the runs."""

    def __init__(self, pool: asyncpg.Pool, uow: Callable[[], PostgresPayments], *, page: int = PAGE) -> None:
        self._pool = pool
        self._uow = uow
        self._page = page

    async def page(self, window: Window) -> list[asyncpg.Record]:
        """One keyset page of the orders paid in the window, by (paid_at, order_id), with their refunds."""
        async with self._pool.acquire() as conn:
            after = window.after
            return list(await conn.fetch(_PAID_PAGE, window.since, window.until, after.at, after.id, window.limit))

    async def paid_between(self, since: datetime, until: datetime) -> list[PaidRecord]:
        out: list[PaidRecord] = []
        after = Cursor(since, "")
        while True:
            rows = await self.page(Window(since, until, after, self._page))
            out += [record_of(r) for r in rows]
            if len(rows) < self._page:
                return out
            after = Cursor(rows[-1]["paid_at"], rows[-1]["order_id"])

    async def reviewed_between(self, since: datetime, until: datetime) -> list[PaidRecord]:
        async with self._pool.acquire() as conn:
            return [record_of(r) for r in await conn.fetch(_REVIEWED, since, until)]

    async def paid(self, order_ids: Collection[str]) -> list[PaidRecord]:
        if not order_ids:
            return []
        async with self._pool.acquire() as conn:
            return [record_of(r) for r in await conn.fetch(_PAID_BY_ID, list(order_ids))]

    async def redrive(self, order_ids: Sequence[str]) -> list[str]:
        """Queue each order's PaymentSucceeded again (same event id), if it is still paid, not under review and
        not refunded, in one transaction with the outbox."""
        announced: list[str] = []
        now = datetime.now(UTC)
        async with self._uow() as tx:
            orders = await tx.get_many(order_ids, for_update=True)
            for order_id in sorted(orders):
                order = orders[order_id]
                if order.payment_status is not PaymentStatus.SUCCEEDED or order.review_status in NOT_TO_CREDIT:
                    continue
                if await tx.refund_of(order_id) is not None:
                    continue
                announce_payment(tx, order, now)
                announced.append(order_id)
        return announced

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[Connection | None]:
        """Hold the audit's lock (one per schema, across every payments process and instance) while inside;
        None when another holds it. A session lock on a connection of its own: a died process frees it."""
        async with self._pool.acquire() as conn:
            schema = await conn.fetchval("SELECT current_schema()")
            key = zlib.crc32(f"payments-audit:{schema}".encode())
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                yield None
                return
            try:
                yield conn
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)

    async def last_scheduled(self, conn: Connection) -> datetime | None:
        value: datetime | None = await conn.fetchval(_LAST_SCHEDULED)
        return value

    async def record(self, conn: Connection, trigger: Trigger, outcome: AuditOutcome, started: datetime) -> None:
        w, report = outcome.window, outcome.report
        counts = orjson.dumps({str(k): n for k, n in report.counts().items()}).decode()
        redriven, in_grace, in_flight = len(outcome.redriven), report.in_grace, report.refunds_in_flight
        await conn.execute(_RECORD_RUN, trigger, w.since, w.until, started, counts, redriven, in_grace, in_flight)

    async def latest(self) -> RecordedRun | None:
        """The latest audit (any process's) as recorded; one recorded before refunds in flight were kept has none."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(_LATEST)
        if row is None:
            return None
        return RecordedRun(row["started_at"], dict(orjson.loads(row["counts"])), row["refunds_in_flight"])
