"""Payments' support cases as its case watch sees them: cases opened, acknowledged and resolved by the real
rules (payments.cases), re-paged one severity higher when nobody acknowledged them for the configured time, and
the open ones shown in payments' real SupportCaseMetrics at every tick, grouped as the watch's query groups them
(kind, severity, acknowledged)."""

from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta

from contracts.events import CaseKind, CaseSeverity
from payments import cases
from payments.adapters.metrics import SupportCaseMetrics
from payments.cases import Case
from payments.config import Settings as PaymentsSettings

REPAGE_AFTER = timedelta(seconds=PaymentsSettings.model_fields["case_repage_after_s"].default)
"""What payments ships with (PAYMENTS_CASE_REPAGE_AFTER_S)."""


class Cases:
    def __init__(self, metrics: SupportCaseMetrics, repage_after: timedelta = REPAGE_AFTER) -> None:
        self._metrics = metrics
        self._after = repage_after
        self._cases: dict[str, Case] = {}

    def open(self, order_id: str, kind: CaseKind, severity: CaseSeverity, now: datetime) -> None:
        """The reconciler's CaseRequested for the order, opened by payments' consumer."""
        self._cases[order_id] = Case(len(self._cases) + 1, order_id, "u", kind, severity, "scenario", now)
        self._metrics.case_opened(kind)

    def acknowledge(self, order_id: str, now: datetime) -> None:
        self._cases[order_id], _ = cases.acknowledge(self._cases[order_id], "alice", None, now)

    def resolve(self, order_id: str, now: datetime) -> None:
        self._cases[order_id], _ = cases.resolve(self._cases[order_id], "alice", "credited by hand", now)

    def watch(self, now: datetime) -> None:
        """A tick of the case watch: due re-pages, then the open cases in the gauges."""
        for order_id, case in self._cases.items():
            louder = cases.next_severity(case.severity)
            due = (case.repaged_at or case.opened_at) + self._after <= now
            if case.resolved_at is None and case.acknowledged_at is None and louder is not None and due:
                self._cases[order_id] = replace(case, severity=louder, repaged_at=now)
                self._metrics.case_repaged(case.kind.value, louder.value)
        counts = Counter(
            (c.kind.value, c.severity.value, c.acknowledged_at is not None)
            for c in self._cases.values()
            if c.resolved_at is None
        )
        self._metrics.show(counts)
