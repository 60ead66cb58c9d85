"""The money audit's comparison: paid orders against credits and refunds, each kind of mismatch found once,
an order in flight not reported, and the totals it looked at."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from payments.audit import AuditReport, Credit, Mismatch, PaidOrder, Refund, compare

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
GRACE = timedelta(minutes=10)
LONG_AGO = NOW - timedelta(hours=1)


def paid(oid: str, amount: int = 600, user: str = "u1", at: datetime = LONG_AGO) -> PaidOrder:
    return PaidOrder(oid, user, amount, "CNY", at)


def credit(oid: str, amount: int = 600, user: str = "u1", tx: str = "") -> Credit:
    return Credit(oid, user, amount, "CNY", tx or f"tx-{oid}")


def refund(oid: str, amount: int = 600, succeeded: bool = True, in_flight: bool = False) -> Refund:
    return Refund(oid, amount, "CNY", succeeded, in_flight)


def audit(p: list[PaidOrder], c: list[Credit], r: list[Refund]) -> AuditReport:
    return compare(p, c, r, now=NOW, grace=GRACE)


def found(report: AuditReport) -> set[tuple[str, Mismatch]]:
    return {(f.order_id, f.mismatch) for f in report.findings}


def test_orders_credited_or_refunded_once_are_in_order() -> None:
    report = audit([paid("a"), paid("b")], [credit("a")], [refund("b")])
    assert report.findings == [] and report.to_redrive() == []
    assert (report.paid, report.credited, report.refunded) == ({"CNY": 1200}, {"CNY": 600}, {"CNY": 600})


def test_a_paid_order_with_neither_credit_nor_refund_is_missing_and_re_driven() -> None:
    report = audit([paid("a"), paid("b")], [credit("a")], [])
    assert found(report) == {("b", Mismatch.MISSING_CREDIT)}
    assert report.to_redrive() == ["b"]


def test_a_paid_order_whose_refund_failed_with_no_credit_is_refund_failed_and_never_re_driven() -> None:
    """The ledger blocked its credit for good (the reconciler refunds only then) and drops a repeat of the payment
    it processed: a re-drive does nothing, and the order is a person's through its needs_support case, which pages
    by itself. As a missing credit it was re-driven for nothing and paged a second time (MoneyAuditMismatch)."""
    report = audit([paid("failed"), paid("lost")], [], [refund("failed", succeeded=False)])
    assert found(report) == {("failed", Mismatch.REFUND_FAILED), ("lost", Mismatch.MISSING_CREDIT)}
    assert report.to_redrive() == ["lost"]
    assert report.counts()[Mismatch.REFUND_FAILED] == 1 and report.refunded == {}


def test_an_order_paid_within_the_grace_period_is_in_flight_not_missing() -> None:
    report = audit([paid("a", at=NOW - timedelta(minutes=2))], [], [])
    assert report.findings == [] and report.in_grace == 1


def test_a_late_callback_recorded_within_the_grace_is_in_flight_however_long_ago_it_says_it_was_paid() -> None:
    late = PaidOrder("late", "u1", 600, "CNY", LONG_AGO, recorded_at=NOW - timedelta(minutes=2))
    long_recorded = PaidOrder("lost", "u1", 600, "CNY", LONG_AGO, recorded_at=NOW - timedelta(minutes=30))
    report = audit([late, long_recorded], [], [])
    assert found(report) == {("lost", Mismatch.MISSING_CREDIT)} and report.in_grace == 1


def test_an_order_whose_refund_is_in_flight_is_counted_apart_not_missing_and_never_re_driven() -> None:
    """Requested or pending at the provider: no money moved yet, and re-driving the order would pay the user twice
    once the provider finishes the refund. Counted apart from the grace: it may stay so for days."""
    report = audit(
        [paid("requested"), paid("pending", at=NOW - timedelta(minutes=2)), paid("lost")],
        [],
        [refund("requested", succeeded=False, in_flight=True), refund("pending", succeeded=False, in_flight=True)],
    )
    assert found(report) == {("lost", Mismatch.MISSING_CREDIT)} and report.to_redrive() == ["lost"]
    assert (report.refunds_in_flight, report.in_grace) == (2, 0)
    assert report.refunded == {}


def test_a_credit_beside_a_refund_in_flight_is_credited_and_refunded() -> None:
    report = audit([paid("a")], [credit("a")], [refund("a", succeeded=False, in_flight=True)])
    assert found(report) == {("a", Mismatch.CREDITED_AND_REFUNDED)} and report.to_redrive() == []
    assert report.refunds_in_flight == 0


def test_credited_twice_and_credited_and_refunded_are_found_and_never_re_driven() -> None:
    report = audit(
        [paid("a"), paid("b")],
        [credit("a", tx="t1"), credit("a", tx="t2"), credit("b")],
        [refund("b")],
    )
    assert found(report) == {("a", Mismatch.CREDITED_TWICE), ("b", Mismatch.CREDITED_AND_REFUNDED)}
    assert report.to_redrive() == []


def test_a_refund_above_what_was_paid_or_twice_is_found() -> None:
    report = audit([paid("a", amount=600), paid("b")], [], [refund("a", amount=700), refund("b"), refund("b")])
    assert found(report) == {
        ("a", Mismatch.REFUND_ABOVE_PAID),
        ("b", Mismatch.REFUNDED_TWICE),
        ("b", Mismatch.REFUND_ABOVE_PAID),
    }


def test_a_credit_or_refund_without_a_payment_and_a_credit_unlike_its_payment_are_found() -> None:
    report = audit([paid("a", amount=600)], [credit("a", amount=6000), credit("ghost")], [refund("phantom")])
    assert found(report) == {
        ("a", Mismatch.CREDIT_DIFFERS_FROM_PAYMENT),
        ("ghost", Mismatch.CREDIT_WITHOUT_PAYMENT),
        ("phantom", Mismatch.REFUND_WITHOUT_PAYMENT),
    }
    assert report.counts()[Mismatch.CREDITED_TWICE] == 0 and sum(report.counts().values()) == 3


orders = st.lists(
    st.tuples(st.integers(1, 100_000), st.sampled_from(["credit", "refund", "refunding", "refund_failed", "lost"])),
    max_size=40,
)


@given(orders)
def test_every_lost_order_is_missing_every_failed_refund_refund_failed_and_nothing_else_reported(
    drawn: list[tuple[int, str]],
) -> None:
    """Against a reference: an order is reported missing exactly when it was lost, refund_failed exactly when its
    refund failed, and the totals add up."""
    p, c, r = [], [], []
    for i, (amount, fate) in enumerate(drawn):
        oid = f"o{i}"
        p.append(paid(oid, amount))
        if fate == "credit":
            c.append(credit(oid, amount))
        elif fate == "refund":
            r.append(refund(oid, amount))
        elif fate == "refunding":
            r.append(refund(oid, amount, succeeded=False, in_flight=True))
        elif fate == "refund_failed":
            r.append(refund(oid, amount, succeeded=False))
    report = audit(p, c, r)
    kinds = {"lost": Mismatch.MISSING_CREDIT, "refund_failed": Mismatch.REFUND_FAILED}
    assert found(report) == {(f"o{i}", kinds[fate]) for i, (_, fate) in enumerate(drawn) if fate in kinds}
    assert report.to_redrive() == sorted(f"o{i}" for i, (_, fate) in enumerate(drawn) if fate == "lost")
    assert report.refunds_in_flight == sum(1 for _, fate in drawn if fate == "refunding")
    total = sum(a for a, _ in drawn)
    assert sum(report.paid.values()) == total
    unmoved = sum(a for a, f in drawn if f in {"lost", "refunding", "refund_failed"})
    assert sum(report.credited.values()) + sum(report.refunded.values()) + unmoved == total
