"""The money audit as a use case: read payments' paid orders and refunds and the ledger's credits for a window,
judge them (payments.audit.compare), re-drive every paid order never credited, and record the outcome.

The window is of payment times, and of risk reviews' decisions: a held order's PaymentSucceeded goes out when it
is released, and a rejected one's refund is owed from its rejection, either of which can be days after the payment
(a review held over a weekend), so an order whose review was decided in the window is judged with it however long
before it was paid (by payment time alone, one decided more than a window after its payment was never judged, and a
PaymentSucceeded or a refund the stream lost there never found). The ledger's credits
are read from a little before the window (a provider's paid_at may be ahead of its arrival, when the ledger credits
it, by up to the clamp skew) to now (a credit comes after its payment); a credit whose order was paid before the
window brings its order in from payments' own books, so it is judged, not reported as a credit without payment. An
order under risk review (held, or rejected and refunded) is expected to have no credit: it is left out unless the
ledger credited it anyway, and it is never re-driven. Nor is an order whose refund is in flight at the provider
(payments.audit.compare). A rejected order not refunded is judged: its refund comes only by the stream
(OrderReviewRejected, the reconciler's BlockCredit, the ledger's final rejection, IssueRefund), and a step of it lost
leaves the money paid, never credited and never refunded while the reconciler waits with no deadline. Past the
grace it is a missing credit, said to be a rejected order's missing refund, and never re-driven (its credit stays
blocked: a person refunds it). One refused by the provider is a failed refund, as for any order; one in flight is
not judged yet.
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal, Protocol

from payments.audit import AuditReport, Credit, Finding, Mismatch, PaidOrder, Refund, compare

Trigger = Literal["schedule", "request"]
CREDIT_SLACK = timedelta(minutes=15)
"""How far before the window the ledger's credits are read at least: more than a provider's clock may run ahead."""
SKEW_MARGIN = timedelta(minutes=5)
"""Beyond the clamp skew, for the ledger's clock against payments' and the time a credit takes."""


def credit_slack(max_skew: timedelta) -> timedelta:
    """How far before the window the ledger's credits are read. payments takes a provider's paid_at up to
    `max_skew` (PAYMENTS_MAX_CLOCK_SKEW_S) ahead of its arrival, and the ledger credits the order at its arrival:
    an order paid at the window's start may be credited that long before it. So the slack follows the skew, never
    below CREDIT_SLACK: a larger skew setting widens the read instead of turning credited orders into missing ones."""
    return max(CREDIT_SLACK, max_skew + SKEW_MARGIN)


NOT_TO_CREDIT = frozenset({"held", "rejected"})
"""Review states in which payments announced no PaymentSucceeded, so no credit is due."""


@dataclass(frozen=True, slots=True)
class PaidRecord:
    """A paid order as payments holds it, with its refund if one was tried."""

    order: PaidOrder
    review_status: str | None
    refund: Refund | None


@dataclass(frozen=True, slots=True)
class AuditWindow:
    since: datetime
    until: datetime
    now: datetime
    grace: timedelta
    slack: timedelta = CREDIT_SLACK
    """How far before `since` the ledger's credits are read (credit_slack)."""


@dataclass(frozen=True)
class AuditOutcome:
    """One audit: its window, what it found, and the orders whose payment it announced again."""

    window: AuditWindow
    report: AuditReport
    redriven: list[str] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return self.report.findings


class PaidOrders(Protocol):
    """Payments' own books of paid orders and refunds."""

    async def paid_between(self, since: datetime, until: datetime) -> list[PaidRecord]:
        """Every order paid in [since, until), with its refund."""
        ...

    async def reviewed_between(self, since: datetime, until: datetime) -> list[PaidRecord]:
        """Every order paid before `since` whose risk review was decided (released or rejected) in [since, until),
        with its refund."""
        ...

    async def paid(self, order_ids: Collection[str]) -> list[PaidRecord]:
        """Those of these orders payments holds as paid, whenever they were paid."""
        ...


class Credits(Protocol):
    """The ledger's credits, read in bulk."""

    async def credits_between(self, since: datetime, until: datetime) -> list[Credit]:
        """Every credit the ledger posted in [since, until)."""
        ...


class Redrive(Protocol):
    """Announces a paid order's payment again, under its original event id (the ledger drops a repeat)."""

    async def __call__(self, order_ids: Sequence[str]) -> list[str]:
        """The orders whose PaymentSucceeded was queued for publication again."""
        ...


async def audit(window: AuditWindow, *, books: PaidOrders, credits: Credits, redrive: Redrive) -> AuditOutcome:
    """Judge the window and re-drive every order paid and never credited (nor refunded) before the grace."""
    records = {r.order.order_id: r for r in await books.paid_between(window.since, window.until)}
    records |= {r.order.order_id: r for r in await books.reviewed_between(window.since, window.until)}
    posted = await credits.credits_between(window.since - window.slack, window.now)
    credited = {c.order_id for c in posted}
    earlier = credited - records.keys()
    records |= {r.order.order_id: r for r in await books.paid(earlier)}
    judged = [r for r in records.values() if _judged(r) or r.order.order_id in credited]
    report = compare(
        [r.order for r in judged],
        posted,
        [r.refund for r in judged if r.refund is not None],
        now=window.now,
        grace=window.grace,
    )
    rejected = {r.order.order_id for r in judged if r.review_status == "rejected"}
    report = replace(report, findings=[_refund_missing(f) if f.order_id in rejected else f for f in report.findings])
    to_redrive = [o for o in report.to_redrive() if o not in rejected]
    again = await redrive(to_redrive) if to_redrive else []
    return AuditOutcome(window, report, again)


def _judged(record: PaidRecord) -> bool:
    """Whether the audit judges the order whatever the ledger says: any order but one held for review, or rejected
    and refunded (neither is owed a credit; a credit of either is judged all the same)."""
    if record.review_status == "held":
        return False
    return record.review_status != "rejected" or record.refund is None or not record.refund.succeeded


def _refund_missing(finding: Finding) -> Finding:
    """A rejected order's missing credit says what is missing: its refund (its credit is blocked for good)."""
    if finding.mismatch is not Mismatch.MISSING_CREDIT:
        return finding
    return replace(finding, detail=f"rejected in risk review and never refunded: {finding.detail}")
