"""Orders, the rules for applying a provider's payment notice, risk review, and what payment providers answer
in provider-neutral words. Pure: no I/O."""

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum


class PaymentStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Order:
    """A top-up order as payments knows it."""

    order_id: str
    user_id: str
    amount: int
    currency: str
    channel: str
    payment_status: PaymentStatus
    status: str
    created_at: datetime
    status_sequence: int = 0
    provider: str | None = None
    provider_txn_id: str | None = None
    paid_at: datetime | None = None
    product: str | None = None
    review_status: str | None = None
    review_reason: str | None = None
    review_expected_at: datetime | None = None
    reviewed_at: datetime | None = None
    reviewed_by_key_id: str | None = None
    reviewed_by_key_name: str | None = None
    reviewed_reason: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentNotice:
    """What a provider's callback says about an order."""

    order_id: str
    provider: str
    provider_txn_id: str
    succeeded: bool
    amount: int
    currency: str
    paid_at: datetime


class PaymentState(StrEnum):
    """What a provider says of the payment for one of our orders."""

    PAID = "paid"  # the money was taken
    PENDING = "pending"  # the provider has the order and is still waiting for the user
    FAILED = "failed"  # an attempt to pay failed; the user may try again until the order is closed
    CLOSED = "closed"  # closed unpaid at the provider: no payment can come any more
    NOT_FOUND = "not_found"  # the provider has never heard of the order
    UNKNOWN = "unknown"  # no answer to trust (a timeout, a server error, a response whose signature failed)


@dataclass(frozen=True, slots=True)
class PaymentQuery:
    """A provider's answer to "what became of the payment for this order?"."""

    state: PaymentState
    order_id: str
    provider: str
    provider_txn_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    paid_at: datetime | None = None
    reason: str = ""

    def notice(self) -> PaymentNotice | None:
        """The payment notice a "paid" answer stands for, to be applied exactly as a callback would be."""
        if self.state is not PaymentState.PAID:
            return None
        assert self.provider_txn_id is not None
        assert self.amount is not None
        assert self.currency is not None
        assert self.paid_at is not None
        return PaymentNotice(
            self.order_id, self.provider, self.provider_txn_id, True, self.amount, self.currency, self.paid_at
        )


@dataclass(frozen=True, slots=True)
class RefundAnswer:
    """A provider's answer to a refund request or query: "succeeded", "failed", "pending" (accepted, not
    finished: ask again later) or "unknown" (no answer, or no such refund: query before requesting again)."""

    status: str
    refund_id: str = ""
    reason: str = ""


REFUNDS_IN_FLIGHT = frozenset({"requested", "pending"})
"""A refund on record whose outcome the provider has not told yet: requested (it may not have reached the provider)
or pending (the provider accepted it and has not finished)."""


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """Give back `amount` of the `paid_amount` that order `order_id` paid through `provider_txn_id`.
    `refund_id` is ours and the provider's idempotency key: the same id again never refunds twice."""

    order_id: str
    refund_id: str
    provider_txn_id: str
    amount: int
    paid_amount: int
    currency: str
    reason: str = ""

    def __post_init__(self) -> None:
        if not 0 < self.amount <= self.paid_amount:
            raise ValueError(f"a refund of {self.amount} cannot come out of a payment of {self.paid_amount}")


class CloseStatus(StrEnum):
    CLOSED = "closed"  # closed now or before: the user can no longer pay
    ALREADY_PAID = "already_paid"  # too late: the user paid, so query and apply the payment instead
    NOT_FOUND = "not_found"  # the provider never had the order: nothing to close, nobody can pay it
    UNKNOWN = "unknown"  # no answer to trust: ask again


@dataclass(frozen=True, slots=True)
class CloseAnswer:
    """A provider's answer to "close this unpaid order"."""

    status: CloseStatus
    reason: str = ""


class CallbackRejected(Exception):
    """A callback refused before it touches an order: bad or missing signature, stale or from the future,
    malformed, or meant for another merchant. `status_code` is the HTTP status to answer with."""

    def __init__(self, status_code: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class RefundNotice:
    """What a provider's callback says about one of our refunds."""

    order_id: str
    refund_id: str
    answer: RefundAnswer


@dataclass(frozen=True, slots=True)
class VerifiedCallback:
    """A callback whose signature held, in provider-neutral words. `event` is the provider's own name for
    what happened (kept for audit); `notice` is None when it carries no payment outcome (a refund's
    progress, a payment still awaited, a trade closed unpaid), and `refund` is set when it is about a refund."""

    provider: str
    event: str
    order_id: str | None
    notice: PaymentNotice | None = None
    refund: RefundNotice | None = None


@dataclass(frozen=True, slots=True)
class CallbackAck:
    """How payments took a callback: a 2xx status when it is stored (applied, duplicate, ignored) and the
    provider may stop sending it, 4xx when refused; a stable code and a sentence."""

    status_code: int
    code: str
    detail: str
    order_id: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status_code < 400


@dataclass(frozen=True, slots=True)
class ProviderReply:
    """The HTTP answer a provider expects to its callback, in its own form."""

    status_code: int
    content_type: str
    body: bytes


class Outcome(StrEnum):
    PAID = "paid"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a notice: the outcome, why, and the order as it is afterwards."""

    outcome: Outcome
    reason: str
    order: Order
    code: str = ""


def new_order_id() -> str:
    return f"ord_{uuid.uuid4().hex}"


def fingerprint(user_id: str, amount: int, currency: str, channel: str, product: str | None = None) -> str:
    """Identifies an order request's body, so a reused Idempotency-Key with another body is caught.
    Requests without a product keep the fingerprint they had before products existed."""
    text = f"{user_id}\x1f{amount}\x1f{currency}\x1f{channel}" + ("" if product is None else f"\x1f{product}")
    return hashlib.sha256(text.encode()).hexdigest()


def bounded(
    notice: PaymentNotice, arrived: datetime, max_skew: timedelta, placed_at: datetime | None = None
) -> tuple[PaymentNotice, bool]:
    """The notice with its `paid_at` clamped to when it arrived if the provider put it more than `max_skew` in
    the future (a provider's clock far ahead would postpone the order's overdue deadline by as much), or more than
    `max_skew` before the order was placed (`placed_at`: nobody pays an order before it exists; a provider's clock far
    behind would make the reconciler take the payment for one older than its retention, and ignore it); and whether
    it was clamped. Any other paid_at in the past stands: a late callback is normal."""
    ahead = notice.paid_at - arrived > max_skew
    before_placed = placed_at is not None and placed_at - notice.paid_at > max_skew
    if not (ahead or before_placed):
        return notice, False
    return replace(notice, paid_at=arrived), True


@dataclass(frozen=True, slots=True)
class Payers:
    """Which provider may pay an order: the one its channel names in `by_channel` (payments' channel_providers);
    an order of a channel not named there, any. `any_channel` may pay every order: the simulated providers, which
    exist only in development (the demo pays every channel through `sim`)."""

    by_channel: Mapping[str, str] = field(default_factory=dict)
    any_channel: frozenset[str] = frozenset()

    def refusal(self, order: Order, provider: str) -> str | None:
        """Why `provider` may not pay `order`, if it may not."""
        expected = self.by_channel.get(order.channel)
        if expected is None or provider == expected or provider in self.any_channel:
            return None
        return f"{order.channel} orders are paid through {expected}, not {provider}"


@dataclass(frozen=True, slots=True)
class Settlements:
    """Which currencies an order of each channel can be paid in: those its provider (`by_channel`, payments'
    channel_providers) settles in (`currencies`, by provider). A channel whose provider names none takes any."""

    by_channel: Mapping[str, str] = field(default_factory=dict)
    currencies: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def refusal(self, channel: str, currency: str) -> str | None:
        """Why an order of `channel` cannot be in `currency`, if it cannot: placed, the provider would charge the
        user and its answer (in its own currency) could never match the order, so nothing would ever credit it."""
        provider = self.by_channel.get(channel)
        taken = self.currencies.get(provider) if provider is not None else None
        if taken is None or currency in taken:
            return None
        return f"{channel} orders are paid through {provider}, which takes {', '.join(sorted(taken))} only"


EXPIRED = "expired"
"""The status of an order closed unpaid at its expiry (payments.queries), announced as OrderExpired."""


def decide(order: Order, notice: PaymentNotice, payers: Payers) -> Decision:
    """Apply a notice once, whatever the number and order of deliveries.

    Rules: only the provider that takes the order's channel may speak for its payment (`payers`); any other is
    refused, whatever it says. Amount and currency must match the order. A success pays a pending or failed order (the
    user may retry a failed payment). A repeat of the success that paid the order is a duplicate. A
    success with another provider transaction on a paid order is refused (a second charge needs a
    person). A failure never undoes a success, nor reopens an order that expired unpaid (a success still pays it).
    """
    wrong_provider = payers.refusal(order, notice.provider)
    if wrong_provider is not None:
        return Decision(Outcome.REJECTED, wrong_provider, order, code="wrong_provider")
    if notice.amount != order.amount or notice.currency != order.currency:
        return Decision(
            Outcome.REJECTED,
            f"callback says {notice.amount} {notice.currency}, order is {order.amount} {order.currency}",
            order,
            code="amount_mismatch",
        )
    if order.payment_status is PaymentStatus.SUCCEEDED:
        if notice.succeeded and (notice.provider, notice.provider_txn_id) == (order.provider, order.provider_txn_id):
            return Decision(Outcome.DUPLICATE, "payment already applied", order)
        if notice.succeeded:
            return Decision(
                Outcome.REJECTED,
                f"order already paid by {order.provider} transaction {order.provider_txn_id}",
                order,
                code="already_paid",
            )
        return Decision(Outcome.IGNORED, "a failure notice cannot undo a payment that succeeded", order)
    if notice.succeeded:
        paid = replace(
            order,
            payment_status=PaymentStatus.SUCCEEDED,
            status="paid",
            provider=notice.provider,
            provider_txn_id=notice.provider_txn_id,
            paid_at=notice.paid_at,
        )
        return Decision(Outcome.PAID, "payment succeeded", paid)
    if order.payment_status is PaymentStatus.FAILED:
        return Decision(Outcome.DUPLICATE, "payment failure already recorded", order)
    if order.status == EXPIRED:
        # A failure told after the order expired unpaid: no new failure to announce after the OrderExpired, and the
        # order stays expired, never back to payment_failed.
        return Decision(Outcome.IGNORED, "the order expired: its trade was closed", order)
    failed = replace(
        order,
        payment_status=PaymentStatus.FAILED,
        status="payment_failed",
        provider=notice.provider,
        provider_txn_id=notice.provider_txn_id,
    )
    return Decision(Outcome.FAILED, "payment failed", failed)


def apply_status(order: Order, status: str, sequence: int) -> Order | None:
    """The order with a newer lifecycle status from the reconciler, or None if `sequence` is not newer."""
    if sequence <= order.status_sequence:
        return None
    return replace(order, status=status, status_sequence=sequence)


@dataclass(frozen=True, slots=True)
class ReviewRule:
    """Hold a user's first top-up above its currency's threshold for a risk review expected to take `expected_s`
    seconds. A first top-up is one whose user has no earlier order that was paid and not held (or held and released).

    Thresholds are in each currency's minor units (fen for CNY, whole yen and won for JPY and KRW), so each
    currency has its own: `above_minor_by_currency`; a currency not named there is held above `above_minor_otherwise`
    (the single number for every currency), and with none either, never."""

    expected_s: float
    above_minor_by_currency: Mapping[str, int] = field(default_factory=dict)
    above_minor_otherwise: int | None = None

    def __post_init__(self) -> None:
        thresholds = [*self.above_minor_by_currency.values(), self.above_minor_otherwise]
        if all(t is None for t in thresholds):
            raise ValueError("a review rule needs a threshold: for some currency, or for every currency")
        if any(t is not None and t <= 0 for t in thresholds):
            raise ValueError(f"review thresholds must be positive: {thresholds}")

    def threshold(self, currency: str) -> int | None:
        """The amount in `currency`'s minor units a first top-up is held above; None: never held."""
        return self.above_minor_by_currency.get(currency, self.above_minor_otherwise)

    @property
    def first_topup_above_minor(self) -> int:
        """The lowest threshold of any currency: an order at or below it is never held, whatever its currency."""
        return min(t for t in (*self.above_minor_by_currency.values(), self.above_minor_otherwise) if t is not None)

    def hold(self, order: Order, first_topup: bool, now: datetime) -> Order:
        """The freshly paid order, held for review if the rule says so."""
        above = self.threshold(order.currency)
        if not first_topup or above is None or order.amount <= above:
            return order
        return replace(
            order,
            status="under_review",
            review_status="held",
            review_reason=f"first top-up above {above} {order.currency} minor units",
            review_expected_at=now + timedelta(seconds=self.expected_s),
        )


class ReviewVerdict(StrEnum):
    RELEASE = "release"
    REJECT = "reject"


_DECIDED = {ReviewVerdict.RELEASE: "released", ReviewVerdict.REJECT: "rejected"}


def decide_review(
    order: Order, verdict: ReviewVerdict, now: datetime, decider: tuple[str, str] | None = None, reason: str = ""
) -> tuple[str, Order | None]:
    """Apply the risk team's verdict once, recording who decided (the API key's id and name) and why: ('applied',
    order), ('duplicate', None) for the same verdict again, or ('not_under_review' | 'review_decided', None)
    when it cannot apply."""
    if order.review_status is None:
        return "not_under_review", None
    if order.review_status == _DECIDED[verdict]:
        return "duplicate", None
    if order.review_status != "held":
        return "review_decided", None
    status = "paid" if verdict is ReviewVerdict.RELEASE else "review_rejected"
    key_id, key_name = decider if decider is not None else (None, None)
    decided = replace(
        order, review_status=_DECIDED[verdict], status=status, reviewed_at=now, reviewed_reason=reason or None
    )
    return "applied", replace(decided, reviewed_by_key_id=key_id, reviewed_by_key_name=key_name)


def cleared(order: Order) -> bool:
    """Whether the order counts as a cleared top-up for the review rule: paid, and not held (or released)."""
    return order.payment_status is PaymentStatus.SUCCEEDED and order.review_status in (None, "released")
