"""The money audit: for a window of time, every order payments holds as paid against the ledger's credits and
payments' own refunds, independently of Kafka. Pure comparison; reading both sides and re-driving are adapters'.

Why here, in payments: a paid order the stream lost is re-driven by re-announcing its PaymentSucceeded, which
only payments may publish (its outbox, its event id); half the data (paid orders, refunds) is payments' own, so
only the credits come over HTTP from the ledger's bulk read; and a periodic job inside a service is deployed,
scraped and alerted on like the rest, where a separate job would need its own schedule and write access.

What counts as wrong, per order:
- missing credit: paid before the grace period and neither credited nor refunded nor being refunded (re-drive
  it);
- refund failed: paid, never credited, and its refund failed at the provider (never a re-drive: the ledger refused
  the credit for good, and the reconciler's needs_support case gives the order to a person);
- credited twice: more than one credit transaction (never a re-drive: a person looks);
- credited and refunded: the user has the currency and the money back, or will have once the provider finishes a
  refund in flight;
- refund above paid, refunded twice, refund without payment;
- credit without payment, or a credit whose user, amount or currency is not the order's.
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class PaidOrder:
    """An order payments holds as paid (the provider confirmed it)."""

    order_id: str
    user_id: str
    amount: int
    currency: str
    paid_at: datetime
    recorded_at: datetime | None = None
    """When payments recorded the payment (applied its callback or query answer) or released it from review: its
    PaymentSucceeded went out then, not at `paid_at`, which a late callback dates minutes or hours earlier."""

    @property
    def announced_at(self) -> datetime:
        """From when the ledger could credit the order: the later of `paid_at` and `recorded_at`."""
        return self.paid_at if self.recorded_at is None else max(self.paid_at, self.recorded_at)


@dataclass(frozen=True, slots=True)
class Credit:
    """A credit transaction the ledger posted for an order."""

    order_id: str
    user_id: str
    amount: int
    currency: str
    transaction_id: str


@dataclass(frozen=True, slots=True)
class Refund:
    """A refund payments executed (or failed to) for an order; only a succeeded one moved money."""

    order_id: str
    amount: int
    currency: str
    succeeded: bool
    in_flight: bool = False
    """Asked of the provider and not finished (requested, pending): no money moved yet, but it may still."""


class Mismatch(StrEnum):
    MISSING_CREDIT = "missing_credit"
    REFUND_FAILED = "refund_failed"
    CREDITED_TWICE = "credited_twice"
    CREDITED_AND_REFUNDED = "credited_and_refunded"
    REFUND_ABOVE_PAID = "refund_above_paid"
    REFUNDED_TWICE = "refunded_twice"
    REFUND_WITHOUT_PAYMENT = "refund_without_payment"
    CREDIT_WITHOUT_PAYMENT = "credit_without_payment"
    CREDIT_DIFFERS_FROM_PAYMENT = "credit_differs_from_payment"


@dataclass(frozen=True, slots=True)
class Finding:
    order_id: str
    mismatch: Mismatch
    detail: str


@dataclass(frozen=True)
class AuditReport:
    """What the audit found, and the money it looked at (minor units per currency)."""

    findings: list[Finding]
    paid: dict[str, int] = field(default_factory=dict)
    credited: dict[str, int] = field(default_factory=dict)
    refunded: dict[str, int] = field(default_factory=dict)
    in_grace: int = 0
    refunds_in_flight: int = 0
    """Orders neither credited nor refunded whose refund the provider has not finished: not judged until it has."""

    def counts(self) -> dict[Mismatch, int]:
        """Findings per mismatch, every mismatch listed (zeros too, for metrics)."""
        found = Counter(f.mismatch for f in self.findings)
        return {m: found.get(m, 0) for m in Mismatch}

    def to_redrive(self) -> list[str]:
        """Orders whose payment should be announced again: paid, never credited, no refund tried (one whose refund
        failed is a person's)."""
        return sorted(f.order_id for f in self.findings if f.mismatch is Mismatch.MISSING_CREDIT)


def compare(
    paid: Iterable[PaidOrder],
    credits: Iterable[Credit],
    refunds: Iterable[Refund],
    *,
    now: datetime,
    grace: timedelta,
) -> AuditReport:
    """Judge every order that appears on any side. An order announced less than `grace` before `now` without a
    credit is in flight, not missing (the grace should exceed the reconciler's threshold plus its remediation).
    Announced, not paid: a late callback's `paid_at` is already past the grace when payments records it.

    An order with a refund in flight and no credit is not judged either, however long ago it was paid: it is
    neither credited nor refunded until the provider finishes, and re-driving it would pay the user twice. A
    credit beside a refund in flight is judged: the user gets the currency and, later, the money back."""
    orders = {p.order_id: p for p in paid}
    credits_of: dict[str, list[Credit]] = {}
    for credit in credits:
        credits_of.setdefault(credit.order_id, []).append(credit)
    refunds_of: dict[str, list[Refund]] = {}
    refunding: set[str] = set()
    refund_failed: set[str] = set()
    for refund in refunds:
        if refund.succeeded:
            refunds_of.setdefault(refund.order_id, []).append(refund)
        elif refund.in_flight:
            refunding.add(refund.order_id)
        else:
            refund_failed.add(refund.order_id)
    findings: list[Finding] = []
    in_grace = in_flight = 0
    for order_id in sorted(orders.keys() | credits_of.keys() | refunds_of.keys()):
        order = orders.get(order_id)
        got, back = credits_of.get(order_id, []), refunds_of.get(order_id, [])
        if order is None:
            findings += _without_payment(order_id, got, back)
            continue
        if not got and not back and order_id in refunding:
            in_flight += 1
            continue
        if not got and not back and order.announced_at > now - grace:
            in_grace += 1
            continue
        findings += _judge(order, got, back, refunding=order_id in refunding, refund_failed=order_id in refund_failed)
    return AuditReport(
        findings,
        paid=_sum((p.currency, p.amount) for p in orders.values()),
        credited=_sum((c.currency, c.amount) for cs in credits_of.values() for c in cs),
        refunded=_sum((r.currency, r.amount) for rs in refunds_of.values() for r in rs),
        in_grace=in_grace,
        refunds_in_flight=in_flight,
    )


def _judge(
    order: PaidOrder, credits: list[Credit], refunds: list[Refund], *, refunding: bool, refund_failed: bool
) -> list[Finding]:
    oid = order.order_id
    out: list[Finding] = []
    paid = f"paid {order.amount} {order.currency}, no credit"
    if not credits and not refunds and refund_failed:
        out.append(Finding(oid, Mismatch.REFUND_FAILED, f"{paid}, its refund failed at the provider"))
    elif not credits and not refunds:
        out.append(Finding(oid, Mismatch.MISSING_CREDIT, f"{paid}, no refund"))
    if len(credits) > 1:
        ids = ", ".join(c.transaction_id for c in credits)
        out.append(Finding(oid, Mismatch.CREDITED_TWICE, f"{len(credits)} credits: {ids}"))
    if credits and refunds:
        out.append(Finding(oid, Mismatch.CREDITED_AND_REFUNDED, "credited and refunded"))
    elif credits and refunding:
        out.append(Finding(oid, Mismatch.CREDITED_AND_REFUNDED, "credited, and a refund in flight at the provider"))
    if len(refunds) > 1:
        out.append(Finding(oid, Mismatch.REFUNDED_TWICE, f"{len(refunds)} refunds"))
    refunded = sum(r.amount for r in refunds if r.currency == order.currency)
    if refunded > order.amount or any(r.currency != order.currency for r in refunds):
        out.append(Finding(oid, Mismatch.REFUND_ABOVE_PAID, f"refunded {refunded}, paid {order.amount}"))
    for credit in credits:
        expected = (order.user_id, order.amount, order.currency)
        if (credit.user_id, credit.amount, credit.currency) != expected:
            detail = f"credit {credit.user_id} {credit.amount} {credit.currency}, paid {expected}"
            out.append(Finding(oid, Mismatch.CREDIT_DIFFERS_FROM_PAYMENT, detail))
    return out


def _without_payment(order_id: str, credits: list[Credit], refunds: list[Refund]) -> list[Finding]:
    out = [Finding(order_id, Mismatch.CREDIT_WITHOUT_PAYMENT, f"credit {c.transaction_id}") for c in credits]
    out += [Finding(order_id, Mismatch.REFUND_WITHOUT_PAYMENT, f"refund of {r.amount}") for r in refunds]
    return out


def _sum(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for currency, amount in pairs:
        totals[currency] = totals.get(currency, 0) + amount
    return totals
