"""The money audit as a use case (payments.auditing), with in-memory books, credits and re-drive: which orders it
judges, which it re-drives, and which it leaves alone."""

import contextlib
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from payments.adapters.auditor import AuditMetrics, Auditor
from payments.audit import Credit, Mismatch, PaidOrder, Refund
from payments.auditing import CREDIT_SLACK, AuditWindow, PaidRecord, audit, credit_slack
from payments.config import Settings
from payments.domain import PaymentNotice, bounded

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WINDOW = AuditWindow(since=NOW - timedelta(days=1), until=NOW, now=NOW, grace=timedelta(minutes=3))


def paid(order_id: str, at: datetime, review: str | None = None, refund: bool | None = None) -> PaidRecord:
    order = PaidOrder(order_id, f"u-{order_id}", 600, "CNY", at)
    return PaidRecord(order, review, None if refund is None else Refund(order_id, 600, "CNY", refund))


def credit(order_id: str) -> Credit:
    return Credit(order_id, f"u-{order_id}", 600, "CNY", f"txn-{order_id}")


class InMemoryBooks:
    def __init__(self, *records: PaidRecord) -> None:
        self.records = {r.order.order_id: r for r in records}

    async def paid_between(self, since: datetime, until: datetime) -> list[PaidRecord]:
        return [r for r in self.records.values() if since <= r.order.paid_at < until]

    async def reviewed_between(self, since: datetime, until: datetime) -> list[PaidRecord]:
        return [
            r
            for r in self.records.values()
            if r.review_status in ("released", "rejected")
            and r.order.recorded_at is not None
            and since <= r.order.recorded_at < until
            and r.order.paid_at < since
        ]

    async def paid(self, order_ids: Collection[str]) -> list[PaidRecord]:
        return [self.records[o] for o in order_ids if o in self.records]


class InMemoryCredits:
    def __init__(self, *credits: tuple[datetime, Credit]) -> None:
        self.credits = credits
        self.asked: list[tuple[datetime, datetime]] = []

    async def credits_between(self, since: datetime, until: datetime) -> list[Credit]:
        self.asked.append((since, until))
        return [c for at, c in self.credits if since <= at < until]


class UnlockedBooks(InMemoryBooks):
    """InMemoryBooks as the Auditor uses them: its lock always free, its runs not kept."""

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[Any]:
        yield object()

    async def record(self, *args: Any) -> None: ...

    async def redrive(self, order_ids: Sequence[str]) -> list[str]:
        return list(order_ids)


class FakeRedrive:
    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    async def __call__(self, order_ids: Sequence[str]) -> list[str]:
        self.asked.append(list(order_ids))
        return list(order_ids)


async def test_a_paid_order_never_credited_is_re_driven_and_one_in_its_grace_is_not() -> None:
    books = InMemoryBooks(paid("lost", NOW - timedelta(hours=2)), paid("fresh", NOW - timedelta(minutes=1)))
    redrive = FakeRedrive()

    outcome = await audit(WINDOW, books=books, credits=InMemoryCredits(), redrive=redrive)

    assert [(f.order_id, f.mismatch) for f in outcome.findings] == [("lost", Mismatch.MISSING_CREDIT)]
    assert redrive.asked == [["lost"]] and outcome.redriven == ["lost"]
    assert outcome.report.in_grace == 1


async def test_nothing_to_re_drive_asks_for_no_re_drive() -> None:
    at = NOW - timedelta(hours=2)
    books = InMemoryBooks(paid("ok", at))
    redrive = FakeRedrive()

    outcome = await audit(WINDOW, books=books, credits=InMemoryCredits((at, credit("ok"))), redrive=redrive)

    assert outcome.findings == [] and redrive.asked == []


async def test_a_credit_in_the_window_for_an_order_paid_before_it_is_judged_with_its_order() -> None:
    before = WINDOW.since - timedelta(minutes=5)
    books = InMemoryBooks(paid("early", before))
    credits = InMemoryCredits((WINDOW.since + timedelta(seconds=1), credit("early")))

    outcome = await audit(WINDOW, books=books, credits=credits, redrive=FakeRedrive())

    assert outcome.findings == []
    assert outcome.report.paid == outcome.report.credited == {"CNY": 600}


async def test_credits_are_read_from_before_the_window_to_now() -> None:
    credits = InMemoryCredits()
    window = AuditWindow(since=WINDOW.since, until=NOW - timedelta(hours=1), now=NOW, grace=WINDOW.grace)

    await audit(window, books=InMemoryBooks(), credits=credits, redrive=FakeRedrive())

    assert credits.asked == [(window.since - CREDIT_SLACK, NOW)]


async def test_an_order_held_or_rejected_in_review_is_never_re_driven_but_a_credit_of_it_is_judged() -> None:
    at = NOW - timedelta(hours=2)
    books = InMemoryBooks(
        paid("held", at, review="held"),
        paid("rejected", at, review="rejected", refund=True),
        paid("held-credited", at, review="held"),
    )
    redrive = FakeRedrive()
    credits = InMemoryCredits((at, credit("held-credited")))

    outcome = await audit(WINDOW, books=books, credits=credits, redrive=redrive)

    assert outcome.findings == [] and redrive.asked == []
    assert outcome.report.paid == {"CNY": 600}  # only the credited one is judged


async def test_a_credit_nobody_paid_for_is_found_and_not_re_driven() -> None:
    redrive = FakeRedrive()
    credits = InMemoryCredits((NOW - timedelta(hours=1), credit("ghost")))

    outcome = await audit(WINDOW, books=InMemoryBooks(), credits=credits, redrive=redrive)

    assert [(f.order_id, f.mismatch) for f in outcome.findings] == [("ghost", Mismatch.CREDIT_WITHOUT_PAYMENT)]
    assert redrive.asked == []


async def test_a_refunded_order_is_neither_missing_nor_re_driven_and_credited_and_refunded_is_found() -> None:
    at = NOW - timedelta(hours=2)
    books = InMemoryBooks(paid("refunded", at, refund=True), paid("both", at, refund=True))
    redrive = FakeRedrive()

    outcome = await audit(WINDOW, books=books, credits=InMemoryCredits((at, credit("both"))), redrive=redrive)

    assert [(f.order_id, f.mismatch) for f in outcome.findings] == [("both", Mismatch.CREDITED_AND_REFUNDED)]
    assert redrive.asked == []


@pytest.mark.parametrize("skew_s", [300.0, 1800.0])  # the default, and a larger one PAYMENTS_MAX_CLOCK_SKEW_S takes
async def test_an_order_paid_ahead_of_its_arrival_within_the_allowed_skew_is_judged_with_its_credit(
    skew_s: float,
) -> None:
    """payments keeps a provider's paid_at up to the skew ahead of its arrival; the ledger credits the order at its
    arrival, before that paid_at. The credits are read from far enough before the window to find it."""
    arrived = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    skew = timedelta(seconds=Settings(max_clock_skew_s=skew_s).max_clock_skew_s)
    notice = PaymentNotice("early", "sim", "tx-early", True, 600, "CNY", arrived + skew - timedelta(minutes=1))
    stated, clamped = bounded(notice, arrived, skew)
    assert not clamped
    books = InMemoryBooks(paid("early", stated.paid_at))
    credits = InMemoryCredits((arrived + timedelta(seconds=1), credit("early")))
    # A scheduled audit of the last day, the order paid just after its start.
    now = stated.paid_at + timedelta(days=1) - timedelta(minutes=2)
    window = AuditWindow(now - timedelta(days=1), now, now, timedelta(minutes=3), credit_slack(skew))

    outcome = await audit(window, books=books, credits=credits, redrive=FakeRedrive())

    assert [(f.order_id, str(f.mismatch)) for f in outcome.findings] == []
    assert outcome.report.credited == {"CNY": 600}


def test_the_credits_slack_is_the_skew_and_a_margin_never_less_than_fifteen_minutes() -> None:
    assert credit_slack(timedelta(minutes=5)) == CREDIT_SLACK == timedelta(minutes=15)
    assert credit_slack(timedelta(minutes=30)) == timedelta(minutes=35)


async def test_the_auditor_reads_credits_as_far_before_the_window_as_the_skew_payments_is_set_to_takes() -> None:
    credits, since = InMemoryCredits(), NOW - timedelta(days=1)
    books: Any = UnlockedBooks()  # duck-typed for PostgresAuditBooks
    auditor = Auditor(
        books, credits, AuditMetrics(CollectorRegistry()), interval_s=300, window_s=86400, grace_s=0, max_skew_s=1800
    )

    await auditor.run(since, NOW)

    assert [asked_since for asked_since, _ in credits.asked] == [since - credit_slack(timedelta(minutes=30))]
