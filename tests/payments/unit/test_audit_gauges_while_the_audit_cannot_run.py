"""What payments' audit gauges show (MoneyAuditMismatch, MoneyAuditStale read them) when the audit that is due
cannot run: the ledger away or refusing the audit key, right after payments started."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from payments.adapters import auditor as auditor_module
from payments.adapters.audit_books import RecordedRun
from payments.adapters.auditor import AuditMetrics, Auditor
from payments.adapters.ledger_credits import LedgerUnreadable

RECORDED_AT = datetime.now(UTC) - timedelta(minutes=6)  # the latest run, recorded before payments restarted


class RecordedBooks:
    """audit_runs holds one scheduled run 6 minutes old that found an order credited twice."""

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[Any]:
        yield object()

    async def last_scheduled(self, conn: Any) -> datetime:
        return RECORDED_AT

    async def redrive(self, *args: Any) -> None: ...

    async def latest(self) -> RecordedRun:
        return RecordedRun(RECORDED_AT, {"credited_twice": 1})


async def test_a_restarted_payments_shows_the_latest_recorded_audit_even_while_the_due_audit_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Auditor.run_periodically copies the latest recorded run into the gauges only after the due audit
    succeeded: `_locked` raises first (the ledger away, the key refused) and the copy is skipped. A payments
    process that starts while the audit cannot run therefore shows payments_audit_mismatches all 0 and
    payments_audit_last_run_timestamp_seconds 0: MoneyAuditMismatch (a page) resolves for an order the last
    audit found credited twice, and MoneyAuditStale fires after 2 minutes saying `never_ran` ("not configured")
    instead of `stale` after 15, sending the engineer to the configuration instead of the ledger."""

    async def ledger_away(*args: Any, **kwargs: Any) -> Any:
        raise LedgerUnreadable("ledger: connection refused")

    monkeypatch.setattr(auditor_module, "audit", ledger_away)
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    audits = Auditor(RecordedBooks(), None, metrics, interval_s=300, window_s=86400, grace_s=180)  # type: ignore[arg-type]
    ticking = asyncio.create_task(audits.run_periodically())
    await asyncio.sleep(0.3)  # the first tick (the next is tick_s = 30 s away)
    ticking.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticking

    last_run = registry.get_sample_value("payments_audit_last_run_timestamp_seconds")
    twice = registry.get_sample_value("payments_audit_mismatches", {"kind": "credited_twice"})
    assert (last_run, twice) == (RECORDED_AT.timestamp(), 1), (
        f"the gauges show last run {last_run} and credited_twice {twice}, not the run recorded at "
        f"{RECORDED_AT.timestamp()} that found 1"
    )
