"""PostgresCases: support cases and their history on payments' PostgreSQL (migration 0007).

Opening a case runs in the consumer's transaction (a unit of work joins the poll's batch); an act on a case reads
it under a row lock, applies the pure rule (payments.cases) and writes the case and its history line together."""

from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from contracts.events import CaseKind, CaseRequested, CaseSeverity
from payments.cases import SERVICE_ACTOR, Case, CaseAction, CaseState, HistoryEntry, UnknownCase, requested_again
from servicekit.uow import PostgresUnitOfWork

CASE_COLUMNS = (
    "id, order_id, user_id, kind, severity, reason, opened_at, owner, acknowledged_at, acknowledged_by, repaged_at,"
    " resolved_at, resolved_by, resolution"
)
OPEN_CASE = (
    "WITH opened AS (INSERT INTO support_cases (order_id, user_id, kind, severity, reason, request_event_id, opened_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING id, opened_at, reason),"
    " history AS (INSERT INTO support_case_history (case_id, at, actor, action, detail)"
    " SELECT id, opened_at, $8, 'opened', reason FROM opened)"
    " SELECT count(*) FROM opened"
)
"""Opens a case (order, user, kind, severity, reason, request event id, when, actor) with its history's first line;
1 when opened, 0 when the order has an open case of the kind or the event id opened one before."""
_AGAIN = (
    "INSERT INTO support_case_history (case_id, at, actor, action, detail)"
    " SELECT id, $3, $4, 'noted', $5 FROM support_cases WHERE order_id = $1 AND kind = $2 AND resolved_at IS NULL"
)
_SEVERITY_RANK = "array_position(ARRAY['critical', 'page', 'warning'], severity)"
_STATES = {
    CaseState.OPEN: "resolved_at IS NULL",
    CaseState.ACKNOWLEDGED: "resolved_at IS NULL AND acknowledged_at IS NOT NULL",
    CaseState.RESOLVED: "resolved_at IS NOT NULL",
    CaseState.ALL: "true",
}
_SAVE = (
    "UPDATE support_cases SET owner = $2, acknowledged_at = $3, acknowledged_by = $4, resolved_at = $5,"
    " resolved_by = $6, resolution = $7 WHERE id = $1"
)
_RECORD = "INSERT INTO support_case_history (case_id, at, actor, action, detail) VALUES ($1, $2, $3, $4, $5)"
SHOWN = 500

Act = Callable[[Case, datetime], tuple[Case, HistoryEntry]]


def case_of(row: asyncpg.Record) -> Case:
    values = dict(row)
    return Case(**{**values, "kind": CaseKind(row["kind"]), "severity": CaseSeverity(row["severity"])})


class PostgresCases:
    """Support cases: opened from CaseRequested, listed, acted on by people."""

    def __init__(self, pool: asyncpg.Pool, uow: Callable[[], PostgresUnitOfWork]) -> None:
        self._pool = pool
        self._uow = uow

    async def open(self, request: CaseRequested, event_id: str, consumer: str) -> bool | None:
        async with self._uow() as uow:
            if not await uow.mark_processed(consumer, event_id):
                return None
            row = (request.order_id, request.user_id, request.kind.value, request.severity.value, request.reason)
            opened = await uow.conn.fetchval(OPEN_CASE, *row, event_id, request.requested_at, SERVICE_ACTOR)
            if opened:
                return True
            await uow.conn.execute(
                _AGAIN,
                request.order_id,
                request.kind.value,
                request.requested_at,
                SERVICE_ACTOR,
                requested_again(request),
            )
            return False

    async def listing(
        self, state: CaseState, kind: CaseKind | None = None, severity: CaseSeverity | None = None
    ) -> list[Case]:
        """Most urgent first (severity, then the oldest), at most SHOWN."""
        query = (
            f"SELECT {CASE_COLUMNS} FROM support_cases WHERE {_STATES[state]}"  # noqa: S608 - constants only
            " AND ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR severity = $2)"
            f" ORDER BY {_SEVERITY_RANK}, opened_at, id LIMIT {SHOWN}"
        )
        rows = await self._pool.fetch(query, kind and kind.value, severity and severity.value)
        return [case_of(r) for r in rows]

    async def for_order(self, order_id: str) -> list[Case]:
        query = f"SELECT {CASE_COLUMNS} FROM support_cases WHERE order_id = $1 ORDER BY id"  # noqa: S608
        return [case_of(r) for r in await self._pool.fetch(query, order_id)]

    async def get(self, case_id: int) -> tuple[Case, list[HistoryEntry]]:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            row = await conn.fetchrow(f"SELECT {CASE_COLUMNS} FROM support_cases WHERE id = $1", case_id)  # noqa: S608
            if row is None:
                raise UnknownCase(f"no support case {case_id}")
            lines = await conn.fetch(
                "SELECT at, actor, action, detail FROM support_case_history WHERE case_id = $1 ORDER BY id", case_id
            )
        return case_of(row), [HistoryEntry(r["at"], r["actor"], CaseAction(r["action"]), r["detail"]) for r in lines]

    async def act(self, case_id: int, act: Act) -> Case:
        """Apply `act` to the case under its row lock and record its history line, in one transaction."""
        async with self._uow() as uow:
            query = f"SELECT {CASE_COLUMNS} FROM support_cases WHERE id = $1 FOR UPDATE"  # noqa: S608
            row = await uow.conn.fetchrow(query, case_id)
            if row is None:
                raise UnknownCase(f"no support case {case_id}")
            case, entry = act(case_of(row), datetime.now(UTC))
            changed = (case.owner, case.acknowledged_at, case.acknowledged_by)
            await uow.conn.execute(_SAVE, case.id, *changed, case.resolved_at, case.resolved_by, case.resolution)
            await uow.conn.execute(_RECORD, case.id, entry.at, entry.actor, entry.action.value, entry.detail)
        return case
