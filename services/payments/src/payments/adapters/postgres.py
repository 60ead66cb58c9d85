"""PostgresPayments: the payments unit of work on PostgreSQL (callbacks, risk review, refunds)."""

import functools
from collections.abc import Collection
from datetime import datetime
from types import TracebackType

from contracts.codec import Record
from contracts.events import CaseRequested
from payments.adapters.cases import OPEN_CASE
from payments.adapters.order_rows import COLUMNS, columns, order_of, params
from payments.cases import SERVICE_ACTOR
from payments.domain import Order, PaymentStatus, RefundRequest
from payments.ports import DueRefund, RefundAnswer, RefundsInFlight
from servicekit.outbox import OUTBOX_COLUMNS, outbox_arrays
from servicekit.uow import PostgresUnitOfWork

_SAVE_TYPES = (
    "text", "text", "text", "integer", "text", "text", "timestamptz", "text", "text", "timestamptz", "timestamptz",
    "text", "text", "text",
)  # fmt: skip


def _save(first: int) -> str:
    return (
        "UPDATE orders o SET payment_status = s.payment_status, status = s.status,"  # noqa: S608 - constants only
        " status_sequence = s.status_sequence, provider = s.provider, provider_txn_id = s.provider_txn_id,"
        " paid_at = s.paid_at, review_status = s.review_status, review_reason = s.review_reason,"
        " review_expected_at = s.review_expected_at, reviewed_at = s.reviewed_at,"
        " reviewed_by_key_id = s.reviewed_by_key_id, reviewed_by_key_name = s.reviewed_by_key_name,"
        " reviewed_reason = s.reviewed_reason, updated_at = now()"
        f" FROM unnest({params(first, _SAVE_TYPES)}) AS s(order_id, payment_status, status, status_sequence,"
        " provider, provider_txn_id, paid_at, review_status, review_reason, review_expected_at, reviewed_at,"
        " reviewed_by_key_id, reviewed_by_key_name, reviewed_reason)"
        " WHERE o.order_id = s.order_id"
    )


_AUDIT_TYPES = ("text", "text", "text", "text", "text", "bytea")


def _audit(first: int) -> str:
    return (
        "INSERT INTO callbacks (provider, order_id, outcome, reason, signature_header, body) SELECT p, o, c, r, s, b"  # noqa: S608
        f" FROM unnest({params(first, _AUDIT_TYPES)}) WITH ORDINALITY AS a(p, o, c, r, s, b, n) ORDER BY n"
    )


_OUTBOX_TYPES = ("text", "bytea", "bytea", "jsonb")


def _outbox(first: int) -> str:
    return (
        f"INSERT INTO outbox ({OUTBOX_COLUMNS}) SELECT t, k, v, h FROM unnest({params(first, _OUTBOX_TYPES)})"  # noqa: S608
        " WITH ORDINALITY AS e(t, k, v, h, n) ORDER BY n"
    )


def _unschedule(first: int) -> str:
    # An order paid needs no more payment queries: its row leaves the schedule with the change, so the query worker
    # only ever takes orders still waiting for their payment. Not an expired one: the query worker ends its queries
    # itself (schedule.finish), and keeps asking about one its provider never had (queries._unknown_to_provider).
    return f"DELETE FROM payment_queries WHERE order_id = ANY(${first}::text[])"  # noqa: S608 - constants only


_PARTS = ((_save, len(_SAVE_TYPES)), (_audit, len(_AUDIT_TYPES)), (_outbox, len(_OUTBOX_TYPES)), (_unschedule, 1))


@functools.cache
def _writes(kinds: tuple[bool, bool, bool, bool]) -> str:
    """One statement for the order changes, audit rows, outbox rows and finished payment queries a unit has
    (data-modifying CTEs)."""
    first, parts = 1, []
    for (part, width), present in zip(_PARTS, kinds, strict=True):
        if present:
            parts.append(part(first))
            first += width
    *ctes, last = parts
    return ("WITH " + ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(ctes)) + " " if ctes else "") + last


_CLEARED = (
    "SELECT DISTINCT user_id FROM orders WHERE user_id = ANY($1::text[]) AND order_id <> ALL($2::text[])"
    " AND payment_status = 'succeeded' AND (review_status IS NULL OR review_status = 'released')"
)


_IN_FLIGHT = "('requested', 'pending')"
_BEGIN_REFUND = (
    "INSERT INTO refunds (order_id, status, reason, attempts, asked_reason, due_at)"
    " VALUES ($1, 'requested', '', 0, $2, $3) ON CONFLICT (order_id) DO NOTHING"
)
# An unknown answer (no answer, no such refund) leaves the refund as it was: pending stays pending (the provider
# accepted it), requested stays requested (it may never have reached the provider).
_SAVE_REFUND = (
    "UPDATE refunds SET status = CASE WHEN $2 = 'unknown' THEN status ELSE $2 END,"  # noqa: S608 - constants only
    " refund_id = coalesce(nullif($3, ''), refund_id), reason = $4, attempts = $5, due_at = $6"
    f" WHERE order_id = $1 AND status IN {_IN_FLIGHT} RETURNING order_id"
)
_CLAIM_REFUNDS = (
    "UPDATE refunds r SET due_at = $2, attempts = r.attempts + 1 FROM (SELECT order_id FROM refunds"  # noqa: S608
    f" WHERE status IN {_IN_FLIGHT} AND due_at <= $1 ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED) d"
    " WHERE r.order_id = d.order_id RETURNING r.order_id, r.status, r.asked_reason, r.attempts, r.created_at"
)
# Reads only the refunds in flight (the partial index refunds_in_flight_due_at holds just those), however many
# refunds have ended.
_REFUNDS_IN_FLIGHT = (
    "SELECT status, count(*) AS n, min(created_at) AS oldest FROM refunds"  # noqa: S608 - constants only
    f" WHERE status IN {_IN_FLIGHT} GROUP BY status"
)


class PostgresPayments(PostgresUnitOfWork):
    """Order changes, the callback audit and refunds, in one transaction with the outbox. Order changes,
    audit rows and outgoing events are written together in one statement when the unit commits."""

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
        """Order changes, audit rows, (outside a consumer's batch, where the batch writes them) the outgoing
        events and the end of a settled order's payment queries, in one round trip before the transaction
        commits."""
        outgoing: list[tuple[str, Record]] = []
        if self._batch is None and self._outgoing:
            outgoing, self._outgoing = self._outgoing, []  # written here, so the base class writes none
            self.wake_on_commit()
        settled: list[object] = [
            o.order_id for o in self._saved.values() if o.payment_status is PaymentStatus.SUCCEEDED
        ]
        kinds = (bool(self._saved), bool(self._audited), bool(outgoing), bool(settled))
        if not any(kinds):
            return
        arrays: list[list[object]] = []
        if self._saved:
            arrays += columns([_save_row(o) for o in self._saved.values()], len(_SAVE_TYPES))
        if self._audited:
            arrays += columns(self._audited, len(_AUDIT_TYPES))
        if outgoing:
            arrays += [list(column) for column in outbox_arrays(outgoing)]
        if settled:
            arrays.append(settled)
        await self.conn.execute(_writes(kinds), *arrays)

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        lock = " FOR UPDATE" if for_update else ""
        query = f"SELECT {COLUMNS} FROM orders WHERE order_id = $1{lock}"  # noqa: S608 - constants only
        row = await self.conn.fetchrow(query, order_id)
        return None if row is None else order_of(row)

    async def get_many(self, order_ids: Collection[str], *, for_update: bool = False) -> dict[str, Order]:
        if not order_ids:
            return {}
        lock = " ORDER BY order_id FOR UPDATE" if for_update else ""
        query = f"SELECT {COLUMNS} FROM orders WHERE order_id = ANY($1::text[]){lock}"  # noqa: S608 - constants only
        return {row["order_id"]: order_of(row) for row in await self.conn.fetch(query, list(order_ids))}

    async def save(self, order: Order) -> None:
        self._saved[order.order_id] = order

    async def cleared_users(self, user_ids: Collection[str], excluding: Collection[str]) -> set[str]:
        rows = await self.conn.fetch(_CLEARED, list(user_ids), list(excluding))
        return {row["user_id"] for row in rows}

    async def refund_of(self, order_id: str) -> RefundAnswer | None:
        row = await self.conn.fetchrow("SELECT refund_id, status, reason FROM refunds WHERE order_id = $1", order_id)
        return None if row is None else RefundAnswer(row["status"], row["refund_id"] or "", row["reason"])

    async def begin_refund(self, request: RefundRequest, due_at: datetime) -> None:
        await self.conn.execute(_BEGIN_REFUND, request.order_id, request.reason, due_at)

    async def save_refund(
        self, order_id: str, answer: RefundAnswer, attempts: int, due_at: datetime | None = None
    ) -> bool:
        row = (order_id, answer.status, answer.refund_id, answer.reason, attempts, due_at)
        return await self.conn.fetchval(_SAVE_REFUND, *row) is not None

    async def claim_refunds(self, now: datetime, lease_until: datetime, limit: int) -> list[DueRefund]:
        rows = await self.conn.fetch(_CLAIM_REFUNDS, now, lease_until, limit)
        return [DueRefund(r["order_id"], r["status"], r["asked_reason"], r["attempts"], r["created_at"]) for r in rows]

    async def refunds_in_flight(self) -> list[RefundsInFlight]:
        rows = await self.conn.fetch(_REFUNDS_IN_FLIGHT)
        return [RefundsInFlight(r["status"], r["n"], r["oldest"]) for r in rows]

    async def record_callback(
        self, *, provider: str, order_id: str | None, outcome: str, reason: str, signature: str | None, body: bytes
    ) -> None:
        self._audited.append((provider, order_id, outcome, reason, signature, body))

    async def open_case(self, request: CaseRequested, event_id: str) -> bool:
        row = (request.order_id, request.user_id, request.kind.value, request.severity.value, request.reason)
        return bool(await self.conn.fetchval(OPEN_CASE, *row, event_id, request.requested_at, SERVICE_ACTOR))


def _save_row(o: Order) -> tuple[object, ...]:
    return (
        o.order_id, o.payment_status.value, o.status, o.status_sequence, o.provider, o.provider_txn_id, o.paid_at,
        o.review_status, o.review_reason, o.review_expected_at, o.reviewed_at, o.reviewed_by_key_id,
        o.reviewed_by_key_name, o.reviewed_reason,
    )  # fmt: skip
