"""Events: past-tense facts that one service tells the others."""

from enum import StrEnum

from pydantic import Field

from contracts.base import Channel, Currency, Flag, Message, MinorUnits, Product, UserId, UtcDatetime, WholeNumber


class OrderPlaced(Message):
    """A user placed a top-up order with payments; nothing is paid yet."""

    event_type = "OrderPlaced"
    user_id: UserId
    amount: MinorUnits
    currency: Currency
    channel: Channel
    product: Product | None = None
    placed_at: UtcDatetime


class PaymentSucceeded(Message):
    """The payment provider confirmed that the user paid for the order: the wallet is now owed a credit."""

    event_type = "PaymentSucceeded"
    user_id: UserId
    amount: MinorUnits
    currency: Currency
    channel: Channel
    product: Product | None = None
    provider: str = Field(min_length=1, max_length=32)
    provider_txn_id: str = Field(min_length=1, max_length=128)
    paid_at: UtcDatetime


class PaymentFailed(Message):
    """The payment provider reported that the payment for the order failed: nothing is owed."""

    event_type = "PaymentFailed"
    user_id: UserId
    channel: Channel
    provider: str = Field(min_length=1, max_length=32)
    provider_txn_id: str = Field(min_length=1, max_length=128)
    failed_at: UtcDatetime


class OrderHeld(Message):
    """The user paid, and payments holds the order for risk review before it may be credited.

    No PaymentSucceeded is published for a held order until the review releases it, so nothing credits
    it meanwhile. The expected duration of the review is `expected_release_at - held_at`.
    """

    event_type = "OrderHeld"
    user_id: UserId
    amount: MinorUnits
    currency: Currency
    channel: Channel
    product: Product | None = None
    paid_at: UtcDatetime
    reason: str = Field(min_length=1, max_length=200)
    held_at: UtcDatetime
    expected_release_at: UtcDatetime


class OrderReleased(Message):
    """The risk review passed: PaymentSucceeded for the order follows, and the credit after it."""

    event_type = "OrderReleased"
    user_id: UserId
    reason: str = Field(default="", max_length=200)
    released_at: UtcDatetime


class OrderReviewRejected(Message):
    """The risk review rejected the held order: it is never credited, and the payment goes back to the user."""

    event_type = "OrderReviewRejected"
    user_id: UserId
    reason: str = Field(min_length=1, max_length=200)
    rejected_at: UtcDatetime


class OrderExpired(Message):
    """The order stayed unpaid until its payment expiry: payments closed it at the provider, so the user can no
    longer pay it, and it ends `expired`. Nothing was taken, so nothing is owed or refunded."""

    event_type = "OrderExpired"
    user_id: UserId
    amount: MinorUnits
    currency: Currency
    channel: Channel
    provider: str = Field(min_length=1, max_length=32)
    placed_at: UtcDatetime
    expired_at: UtcDatetime


class CreditPosted(Message):
    """The ledger credited the user's wallet for the order (exactly once per order)."""

    event_type = "CreditPosted"
    user_id: UserId
    amount: MinorUnits
    currency: Currency
    transaction_id: str = Field(min_length=1, max_length=64)
    credited_at: UtcDatetime


class CreditRejected(Message):
    """The ledger refused to credit the order; `final` says whether retrying can ever succeed."""

    event_type = "CreditRejected"
    user_id: UserId
    reason: str = Field(min_length=1, max_length=200)
    final: Flag
    rejected_at: UtcDatetime


class RefundSucceeded(Message):
    """The provider returned the order's payment to the user's original payment method."""

    event_type = "RefundSucceeded"
    user_id: UserId
    amount: MinorUnits
    currency: Currency
    refund_id: str = Field(min_length=1, max_length=128)
    refunded_at: UtcDatetime


class RefundFailed(Message):
    """The refund could not be made; a person has to take over."""

    event_type = "RefundFailed"
    user_id: UserId
    reason: str = Field(min_length=1, max_length=200)
    failed_at: UtcDatetime


class OrderStatus(StrEnum):
    """What the user is told about an order. `paid` is the starting point, not a notification."""

    PAID = "paid"
    CREDITED = "credited"
    DELAYED = "delayed"
    UNDER_REVIEW = "under_review"
    REMEDIATING = "remediating"
    COMPENSATED = "compensated"
    REFUNDED = "refunded"
    NEEDS_SUPPORT = "needs_support"
    EXPIRED = "expired"
    """The order was never paid and was closed at its payment expiry (payments' OrderExpired, which the notifier
    tells the user about directly: no OrderStatusChanged carries it)."""


class OrderStatusChanged(Message):
    """The order's user-facing status changed; the notifier tells the user once per change."""

    event_type = "OrderStatusChanged"
    user_id: UserId
    status: OrderStatus
    sequence: WholeNumber = Field(ge=1, description="Per-order counter: a reader keeps the highest it has seen.")
    previous_status: OrderStatus | None = None
    reason: str = Field(default="", max_length=200)
    amount: MinorUnits
    currency: Currency
    channel: Channel
    paid_at: UtcDatetime
    credited_at: UtcDatetime | None = None
    estimated_credit_at: UtcDatetime | None = None
    changed_at: UtcDatetime


class CaseKind(StrEnum):
    """Why an order needs a person to own it."""

    NEEDS_SUPPORT = "needs_support"
    """Remediation ran out: the refund failed, or the order was credited while a refund was under way."""
    REVIEW_OVERDUE = "review_overdue"
    """A risk-review hold is still open past its expected release (plus the order's threshold)."""
    CREDIT_WITHOUT_PAYMENT = "credit_without_payment"
    """The ledger credited an order that has no successful payment."""
    REFUSED_CHARGE = "refused_charge"
    """A provider says, signed, that it took the user's money for the order in a way payments refuses (a second
    charge on a paid order, another amount, a provider that does not take the order's channel): nothing credits
    or refunds that money, so a person refunds it at the provider. Opened by payments itself."""


class CaseSeverity(StrEnum):
    """How loudly a case asks for an owner. An unacknowledged case is re-paged one step higher."""

    WARNING = "warning"
    PAGE = "page"
    CRITICAL = "critical"


class CaseRequested(Message):
    """The reconciler found an order a person has to own; payments opens a support case for it.

    Its event id is deterministic per order and kind, so a repeat opens nothing: there is at most one open
    case per order and kind."""

    event_type = "CaseRequested"
    user_id: UserId
    kind: CaseKind
    severity: CaseSeverity
    reason: str = Field(min_length=1, max_length=200)
    requested_at: UtcDatetime
