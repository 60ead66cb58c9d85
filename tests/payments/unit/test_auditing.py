"""The money audit as a use case (payments.auditing), with in-memory books, credits and re-drive: which orders it
judges, which it re-drives, and which it leaves alone."""

from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

from payments.audit import Credit, Mismatch, PaidOrder, Refund
from payments.auditing import CREDIT_SLACK, AuditWindow, PaidRecord, audit

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

    async def paid(self, order_ids: Collection[str]) -> list[PaidRecord]:
        return [self.records[o] for o in order_ids if o in self.records]


class InMemoryCredits:
    def __init__(self, *credits: tuple[datetime, Credit]) -> None:
        self.credits = credits
        self.asked: list[tuple[datetime, datetime]] = []

    async def credits_between(self, since: datetime, until: datetime) -> list[Credit]:
        self.asked.append((since, until))
        return [c for at, c in self.credits if since <= at < until]


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
