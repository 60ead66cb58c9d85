"""PostgresQuerySchedule: the payment queries' schedule on PostgreSQL (the payment_queries table)."""

from collections.abc import Mapping, Sequence
from datetime import datetime

import asyncpg

from payments.domain import PaymentStatus
from payments.queries import DueQuery
from servicekit.postgres import fetch_planned_now

# Due rows are locked with SKIP LOCKED, so workers in other processes take other rows, and leased (due_at moved
# past the lease) in the same statement, so a row stays taken after this short transaction commits.
_CLAIM = (
    "WITH due AS (SELECT order_id FROM payment_queries WHERE due_at <= $1 ORDER BY due_at LIMIT $2"
    " FOR UPDATE SKIP LOCKED)"
    " UPDATE payment_queries q SET due_at = $3, attempts = q.attempts + 1"
    " FROM due, orders o WHERE q.order_id = due.order_id AND o.order_id = q.order_id"
    " RETURNING q.order_id, q.provider, q.channel, q.expires_at, q.attempts, o.payment_status, o.status"
)
# The same, of each provider with room at most so many ((provider, due_at) index): a provider that is down, whose
# pending orders fell due first, no longer takes the whole round.
_CLAIM_BY_PROVIDER = (
    "WITH due AS (SELECT d.order_id FROM unnest($4::text[], $5::int[]) AS r(provider, room)"
    " CROSS JOIN LATERAL (SELECT order_id, due_at FROM payment_queries p WHERE p.provider = r.provider"
    " AND p.due_at <= $1 ORDER BY p.due_at LIMIT r.room FOR UPDATE SKIP LOCKED) d ORDER BY d.due_at LIMIT $2)"
    " UPDATE payment_queries q SET due_at = $3, attempts = q.attempts + 1"
    " FROM due, orders o WHERE q.order_id = due.order_id AND o.order_id = q.order_id"
    " RETURNING q.order_id, q.provider, q.channel, q.expires_at, q.attempts, o.payment_status, o.status"
)
_RESCHEDULE = "UPDATE payment_queries SET due_at = $2, last_answer = $3 WHERE order_id = $1"
_FINISH = "DELETE FROM payment_queries WHERE order_id = ANY($1::text[])"
_NEXT_DUE = "SELECT min(due_at) FROM payment_queries"


class PostgresQuerySchedule:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(
        self, due_by: datetime, limit: int, lease_until: datetime, rooms: Mapping[str, int] | None = None
    ) -> list[DueQuery]:
        if rooms is None:
            rows = await fetch_planned_now(self._pool, _CLAIM, due_by, limit, lease_until)
        else:
            names = sorted(rooms)
            rows = await fetch_planned_now(
                self._pool, _CLAIM_BY_PROVIDER, due_by, limit, lease_until, names, [rooms[n] for n in names]
            )
        return [
            DueQuery(
                order_id=r["order_id"],
                provider=r["provider"],
                channel=r["channel"],
                expires_at=r["expires_at"],
                attempts=r["attempts"],
                payment_status=PaymentStatus(r["payment_status"]),
                status=r["status"],
            )
            for r in rows
        ]

    async def reschedule(self, order_id: str, due_at: datetime, answer: str) -> None:
        await self._pool.execute(_RESCHEDULE, order_id, due_at, answer)

    async def finish(self, order_ids: Sequence[str]) -> None:
        await self._pool.execute(_FINISH, list(order_ids))

    async def next_due(self) -> datetime | None:
        due: datetime | None = await self._pool.fetchval(_NEXT_DUE)
        return due
