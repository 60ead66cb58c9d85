"""Auditor: runs the money audit (payments.auditing) periodically and on request, one run at a time across every
payments process and instance, and shows the latest run's findings in the metrics.

Every process ticks; a tick that gets the audit's lock runs a scheduled audit if the last scheduled one (any
process's) started an interval ago or more, and every tick copies the latest recorded run into its own gauges,
so whichever process Prometheus scrapes answers the same mismatches.
"""

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge

from payments.adapters.audit_books import PostgresAuditBooks, RecordedRun
from payments.adapters.ledger_credits import LedgerUnreadable
from payments.audit import Mismatch
from payments.auditing import AuditOutcome, AuditWindow, Credits, Trigger, audit, credit_slack
from payments.callbacks import DEFAULT_MAX_SKEW
from servicekit.errors import log_failed_round

log = logging.getLogger(__name__)


class AuditBusy(Exception):
    """Another audit holds the lock and did not finish within the wait."""


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.mismatches = Gauge(
            "payments_audit_mismatches",
            "Orders the latest money audit found wrong, by kind (missing_credit: paid, never credited, no refund tried;"
            " refund_failed: the same with a refund that failed, a person's through its needs_support case).",
            ["kind"],
            registry=registry,
        )
        self.redriven = Counter(
            "payments_audit_redriven_total",
            "Paid orders never credited whose PaymentSucceeded the money audit announced again.",
            registry=registry,
        )
        self.runs = Counter(
            "payments_audit_runs_total",
            "Money audits run by this process, by trigger (schedule, request) and outcome (ok, failed).",
            ["trigger", "outcome"],
            registry=registry,
        )
        self.last_run = Gauge(
            "payments_audit_last_run_timestamp_seconds",
            "When the latest money audit (any payments process's) started, Unix seconds.",
            registry=registry,
        )
        self.refunds_in_flight = Gauge(
            "payments_audit_refunds_in_flight",
            "Orders the latest money audit did not judge: neither credited nor refunded, with a refund the provider "
            "has not finished (requested, pending); never re-driven.",
            registry=registry,
        )
        for kind in Mismatch:
            self.mismatches.labels(kind.value).set(0)
        for trigger in ("schedule", "request"):
            for outcome in ("ok", "failed"):
                self.runs.labels(trigger, outcome)

    def ran(self, trigger: Trigger, outcome: AuditOutcome, started: datetime) -> None:
        """An audit this process ran: counted, its re-drives counted, its findings shown."""
        self.runs.labels(trigger, "ok").inc()
        self.redriven.inc(len(outcome.redriven))
        report = outcome.report
        self.show(RecordedRun(started, {str(k): n for k, n in report.counts().items()}, report.refunds_in_flight))

    def show(self, run: RecordedRun) -> None:
        self.last_run.set(run.started_at.timestamp())
        for kind in Mismatch:
            self.mismatches.labels(kind.value).set(run.counts.get(kind.value, 0))
        self.refunds_in_flight.set(run.refunds_in_flight)


class Auditor:
    """The money audit's runs: `run` on request, `run_periodically` as a service task."""

    def __init__(
        self,
        books: PostgresAuditBooks,
        credits: Credits,
        metrics: AuditMetrics,
        *,
        interval_s: float,
        window_s: float,
        grace_s: float,
        max_skew_s: float = DEFAULT_MAX_SKEW.total_seconds(),
        lock_wait_s: float = 30.0,
    ) -> None:
        self._books = books
        self._credits = credits
        self._metrics = metrics
        self._interval = timedelta(seconds=interval_s)
        self._window = timedelta(seconds=window_s)
        self._grace = timedelta(seconds=grace_s)
        self._slack = credit_slack(timedelta(seconds=max_skew_s))  # PAYMENTS_MAX_CLOCK_SKEW_S, as callbacks clamp
        self._lock_wait_s = lock_wait_s
        self.tick_s = min(max(interval_s / 10, 0.2), 30.0)

    async def run(self, since: datetime, until: datetime | None = None) -> AuditOutcome:
        """One audit now over [since, until or now), waiting for a running one to finish (AuditBusy if it
        takes longer than the wait)."""
        deadline = asyncio.get_running_loop().time() + self._lock_wait_s
        while True:
            outcome = await self._locked("request", since, until, due=None)
            if outcome is not None:
                return outcome
            if asyncio.get_running_loop().time() >= deadline:
                raise AuditBusy(f"another audit is still running after {self._lock_wait_s:.0f}s")
            await asyncio.sleep(0.2)

    async def run_periodically(self) -> None:
        """Until cancelled: a scheduled audit over the last window whenever one is due; the latest run's findings
        in the gauges at every tick. A failed run (the ledger or the database away, or a bug) is counted, logged
        and tried again at the next tick: the audit is a check beside payments, never a reason to stop it."""
        while True:
            try:
                now = datetime.now(UTC)
                try:
                    await self._locked("schedule", now - self._window, None, due=now - self._interval)
                finally:
                    # The latest recorded run, whether or not the due one could run: a process started while the
                    # ledger is away shows what the last audit found (and how old it is), not zeros that would
                    # resolve MoneyAuditMismatch and read as an audit never configured.
                    latest = await self._books.latest()
                    if latest is not None:
                        self._metrics.show(latest)
            except Exception as exc:  # noqa: BLE001 - logged; a failed audit never stops payments taking payments
                log_failed_round(log, "money audit", exc, self.tick_s, away=isinstance(exc, LedgerUnreadable))
            await asyncio.sleep(self.tick_s)

    async def _locked(
        self, trigger: Trigger, since: datetime, until: datetime | None, *, due: datetime | None
    ) -> AuditOutcome | None:
        async with self._books.exclusive() as conn:
            if conn is None:
                return None
            if due is not None:
                last = await self._books.last_scheduled(conn)
                if last is not None and last > due:
                    return None
            started = datetime.now(UTC)
            window = AuditWindow(since, until or started, started, self._grace, self._slack)
            try:
                outcome = await audit(window, books=self._books, credits=self._credits, redrive=self._books.redrive)
            except Exception:
                self._metrics.runs.labels(trigger, "failed").inc()
                raise
            await self._books.record(conn, trigger, outcome, started)
        self._metrics.ran(trigger, outcome, started)
        _log(trigger, outcome)
        return outcome


def _log(trigger: Trigger, outcome: AuditOutcome) -> None:
    w = outcome.window
    for finding in outcome.findings:
        log.warning("money audit: order_id=%s %s: %s", finding.order_id, finding.mismatch, finding.detail)
    for order_id in outcome.redriven:
        log.info("money audit re-drove order_id=%s: PaymentSucceeded announced again", order_id)
    log.info(
        "money audit (%s) of payments %s..%s: %d findings, %d re-driven, %d in grace, %d with a refund in flight",
        trigger,
        w.since.isoformat(),
        w.until.isoformat(),
        len(outcome.findings),
        len(outcome.redriven),
        outcome.report.in_grace,
        outcome.report.refunds_in_flight,
    )
