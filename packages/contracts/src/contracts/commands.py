"""Commands: imperative requests from the reconciler; each carries a deterministic id so a repeat has no effect."""

from pydantic import Field

from contracts.base import Currency, Message, MinorUnits, UserId, UtcDatetime, WholeNumber


class RetryCredit(Message):
    """Ledger: credit this paid order now if it has not been credited (re-announce the credit if it has).

    It carries the payment fact it rests on (the PaymentSucceeded's user, amount, currency and provider
    transaction id); the ledger credits only when that matches the payment it recorded for the order."""

    event_type = "RetryCredit"
    user_id: UserId
    amount: MinorUnits
    currency: Currency
    attempt: WholeNumber = Field(ge=1, le=100)
    requested_at: UtcDatetime
    # Optional only so version 1 payloads written before it still decode; the ledger refuses a retry without it.
    provider_txn_id: str | None = Field(
        None, min_length=1, max_length=128, description="The paid order's provider transaction id."
    )
    # Kept so records written before RedriveCredit still decode: the ledger refuses a retry that names one.
    requested_by: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="No longer sent: a person's re-drive is a RedriveCredit on ledger.redrives. The ledger refuses"
        " for good a RetryCredit that names one (reason wrong_topic): ledger.commands has writers other than"
        " payments' support API, and only a person may lift a block.",
    )


class RedriveCredit(Message):
    """Ledger: a person re-drives the credit of this paid order (payments' support API, scope support:act).

    Only payments writes the topic that carries it (ledger.redrives), so it is the one command that may lift the
    ledger's block on an order: unless the order was refunded or its block is one a refund follows
    (REFUND_BLOCKS). Like a RetryCredit it credits only when its payment fact matches the recorded payment, and
    re-announces a credit the order has already."""

    event_type = "RedriveCredit"
    user_id: UserId
    amount: MinorUnits
    currency: Currency
    provider_txn_id: str = Field(min_length=1, max_length=128, description="The paid order's provider transaction id.")
    attempt: WholeNumber = Field(
        ge=1, le=100, description="Which re-drive of the order this is (payments counts them)."
    )
    requested_by: str = Field(min_length=1, max_length=200, description="Who asked: the API key's name.")
    requested_at: UtcDatetime


class BlockCredit(Message):
    """Ledger: never credit this order from now on, unless it is credited already (then re-announce the
    credit). Answered by CreditRejected(final=True) or CreditPosted; the refund waits for that answer."""

    event_type = "BlockCredit"
    user_id: UserId
    reason: str = Field(min_length=1, max_length=200)
    requested_at: UtcDatetime


REVIEW_REJECTED_BLOCK = "risk review rejected: "
"""How the reconciler's BlockCredit for an order rejected in risk review starts its reason (then the review's)."""
SUPPORT_REFUND_BLOCK = "support refund by "
"""How payments' BlockCredit before a refund a person asked starts its reason (then who asked, and why)."""
REFUND_BLOCKS = (REVIEW_REJECTED_BLOCK, SUPPORT_REFUND_BLOCK)
"""Blocks a refund follows that a re-drive must never lift: a credit beside the refund would pay the user twice,
and a rejected review is not overruled by a credit. (The reconciler's block after its retries, whose refund may
fail and end in needs_support, is the one a person may lift.)"""


class IssueRefund(Message):
    """Payments: refund this order to the original payment method; it could not be credited."""

    event_type = "IssueRefund"
    user_id: UserId
    amount: MinorUnits
    currency: Currency
    reason: str = Field(min_length=1, max_length=200)
    requested_at: UtcDatetime


class GrantCompensation(Message):
    """Ledger: grant the user a delay compensation for this order, once per order."""

    event_type = "GrantCompensation"
    user_id: UserId
    amount: MinorUnits
    currency: Currency
    requested_at: UtcDatetime
