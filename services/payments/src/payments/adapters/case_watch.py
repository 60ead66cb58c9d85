"""CaseWatch: re-pages support cases nobody acknowledged in time, and shows the open cases in the metrics.

Every payments process ticks. A re-page is one UPDATE whose WHERE names the case's current severity and its
last page time: when two processes tick at once, the second's UPDATE re-reads the row after the first committed
and finds it paged just now, so a case steps up once per interval, whichever process does it."""

import asyncio
import logging

import asyncpg

from contracts.events import CaseSeverity
from payments.adapters.metrics import SupportCaseMetrics
from payments.cases import SERVICE_ACTOR, next_severity
from servicekit.errors import log_failed_round

log = logging.getLogger(__name__)

_STEPS = [(s.value, step.value) for s in CaseSeverity if (step := next_severity(s)) is not None]

_REPAGE = (
    "WITH stepped AS (UPDATE support_cases c SET severity = s.next, repaged_at = now()"
    " FROM unnest($1::text[], $2::text[]) AS s(prev, next)"
    " WHERE c.severity = s.prev AND c.resolved_at IS NULL AND c.acknowledged_at IS NULL"
    " AND coalesce(c.repaged_at, c.opened_at) <= now() - make_interval(secs => $3::float8)"
    " RETURNING c.id, c.order_id, c.kind, s.prev, c.severity, c.repaged_at),"
    " history AS (INSERT INTO support_case_history (case_id, at, actor, action, detail)"
    " SELECT id, repaged_at, $4, 'repaged', prev || ' -> ' || severity || ': nobody acknowledged it in '"
    " || $5::text FROM stepped)"
    " SELECT id, order_id, kind, prev, severity FROM stepped"
)
_OPEN_COUNTS = (
    "SELECT kind, severity, acknowledged_at IS NOT NULL AS acknowledged, count(*) AS n FROM support_cases"
    " WHERE resolved_at IS NULL GROUP BY 1, 2, 3"
)


class CaseWatch:
    """`run_periodically` as a service task: re-page, then refresh the open-case gauges, every `tick_s`."""

    def __init__(
        self, pool: asyncpg.Pool, metrics: SupportCaseMetrics, *, repage_after_s: float, tick_s: float = 5.0
    ) -> None:
        self._pool = pool
        self._metrics = metrics
        self._after_s = repage_after_s
        self.tick_s = tick_s

    async def repage(self) -> int:
        """Step every open, unacknowledged case last paged `repage_after_s` ago or more one severity up."""
        froms, tos = [p for p, _ in _STEPS], [n for _, n in _STEPS]
        waited = f"{self._after_s:g} s"
        rows = await self._pool.fetch(_REPAGE, froms, tos, self._after_s, SERVICE_ACTOR, waited)
        for row in rows:
            self._metrics.case_repaged(row["kind"], row["severity"])
            log.warning(
                "support case %s of order_id=%s (%s) re-paged %s -> %s: nobody acknowledged it",
                row["id"],
                row["order_id"],
                row["kind"],
                row["prev"],
                row["severity"],
            )
        return len(rows)

    async def refresh(self) -> None:
        rows = await self._pool.fetch(_OPEN_COUNTS)
        self._metrics.show({(r["kind"], r["severity"], r["acknowledged"]): r["n"] for r in rows})

    async def run_periodically(self) -> None:
        """Until cancelled. A tick that fails (the database away, or a bug) is logged and tried again: the watch
        is beside payments, never a reason to stop it."""
        while True:
            try:
                await self.repage()
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - logged, with its traceback if a bug
                log_failed_round(log, "support case watch", exc, self.tick_s)
            await asyncio.sleep(self.tick_s)
