"""Support cases: an order a person has to own (contracts CaseRequested), its owner, acknowledgement, notes,
re-pages and resolution. Pure rules: what each act does to a case and what it records in the case's history.

The store (payments.adapters.cases) reads a case under a row lock, applies one of these and writes the result,
so two people acting on one case at once are applied one after the other."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from contracts.codec import Envelope
from contracts.events import CaseKind, CaseRequested, CaseSeverity, OrderStatus

log = logging.getLogger(__name__)

SERVICE_ACTOR = "credited"
"""The actor recorded for what payments does to a case by itself (opens, re-pages, resolves on a status)."""

SEVERITIES = (CaseSeverity.CRITICAL, CaseSeverity.PAGE, CaseSeverity.WARNING)
"""Most urgent first: the order cases are listed in."""

RESOLVING_STATUSES = frozenset(s.value for s in (OrderStatus.CREDITED, OrderStatus.REFUNDED, OrderStatus.COMPENSATED))
"""Order statuses (orders.status) that settle an order: its open cases resolve by themselves."""

SETTLED_BY_STATUS = frozenset({CaseKind.NEEDS_SUPPORT.value, CaseKind.REVIEW_OVERDUE.value})
"""The kinds of case a settling status resolves. Not credit_without_payment: the order being credited is what that
case is about, so a person says how it ended."""


class CaseState(StrEnum):
    """Which cases a listing answers: open (not resolved, the default), acknowledged (and not resolved),
    resolved, or all."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    ALL = "all"


class CaseAction(StrEnum):
    OPENED = "opened"
    ACKNOWLEDGED = "acknowledged"
    ASSIGNED = "assigned"
    NOTED = "noted"
    REPAGED = "repaged"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Case:
    id: int
    order_id: str
    user_id: str
    kind: CaseKind
    severity: CaseSeverity
    reason: str
    opened_at: datetime
    owner: str | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    repaged_at: datetime | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution: str | None = None

    def age_s(self, now: datetime) -> float:
        """Seconds since the case opened (until it resolved, for a resolved case)."""
        return max(0.0, ((self.resolved_at or now) - self.opened_at).total_seconds())


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    at: datetime
    actor: str
    action: CaseAction
    detail: str = ""


class UnknownCase(Exception):
    """No case has this id."""


class CaseResolved(Exception):
    """The case is resolved already: it takes notes, nothing else."""


def next_severity(severity: CaseSeverity) -> CaseSeverity | None:
    """One step louder (warning -> page -> critical); None for critical, which has nowhere to go."""
    index = SEVERITIES.index(severity)
    return SEVERITIES[index - 1] if index > 0 else None


def listing_order(case: Case) -> tuple[int, datetime]:
    """The sort key of a listing: severity (critical first), then age (oldest first)."""
    return SEVERITIES.index(case.severity), case.opened_at


def ordered(cases: Sequence[Case]) -> list[Case]:
    return sorted(cases, key=listing_order)


def _open(case: Case) -> None:
    if case.resolved_at is not None:
        raise CaseResolved(f"case {case.id} was resolved by {case.resolved_by}: {case.resolution}")


def acknowledge(case: Case, actor: str, note: str | None, now: datetime) -> tuple[Case, HistoryEntry]:
    """The caller owns up to the case: it stops re-paging; its owner is the caller unless it has one. A second
    acknowledgement keeps the first one's time and name and is recorded too."""
    _open(case)
    acknowledged = replace(
        case,
        owner=case.owner or actor,
        acknowledged_at=case.acknowledged_at or now,
        acknowledged_by=case.acknowledged_by or actor,
    )
    return acknowledged, HistoryEntry(now, actor, CaseAction.ACKNOWLEDGED, note or "")


def assign(case: Case, actor: str, owner: str, now: datetime) -> tuple[Case, HistoryEntry]:
    _open(case)
    return replace(case, owner=owner), HistoryEntry(now, actor, CaseAction.ASSIGNED, owner)


def note(case: Case, actor: str, text: str, now: datetime) -> tuple[Case, HistoryEntry]:
    """A note, on any case (a resolved one too: what was learned afterwards)."""
    return case, HistoryEntry(now, actor, CaseAction.NOTED, text)


def resolve(case: Case, actor: str, resolution: str, now: datetime) -> tuple[Case, HistoryEntry]:
    _open(case)
    resolved = replace(case, resolved_at=now, resolved_by=actor, resolution=resolution)
    return resolved, HistoryEntry(now, actor, CaseAction.RESOLVED, resolution)


def requested_again(request: CaseRequested) -> str:
    """The history line of a request for an order and kind that already has an open case."""
    return f"requested again ({request.severity.value}): {request.reason}"


class CaseBook(Protocol):
    """Where cases are kept, with their history."""

    async def open(self, request: CaseRequested, event_id: str, consumer: str) -> bool | None:
        """Open a case for the request, once per event id: True when opened, False when the order and kind
        have an open case already (the request is recorded in its history), None for a redelivery."""
        ...


async def handle_case_requested(message: CaseRequested, envelope: Envelope, *, cases: CaseBook, consumer: str) -> bool:
    """The reconciler asks for a person to own an order: one open case per order and kind. True when opened."""
    opened = await cases.open(message, envelope.event_id, consumer)
    if opened:
        log.info(
            "support case opened: order_id=%s kind=%s severity=%s (event %s)",
            message.order_id,
            message.kind,
            message.severity,
            envelope.event_id,
        )
    elif opened is False:
        log.info("order_id=%s has an open %s case: request %s noted", message.order_id, message.kind, envelope.event_id)
    return bool(opened)
