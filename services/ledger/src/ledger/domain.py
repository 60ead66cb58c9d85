"""Accounts, postings and the rules of double entry. Pure: no I/O."""

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cache

import contracts.base
from contracts.codec import Envelope, deterministic_id
from contracts.commands import REFUND_BLOCKS, RetryCredit


class AccountKind(StrEnum):
    WALLET = "wallet"
    TOPUP_CLEARING = "topup_clearing"
    COMPENSATION = "compensation"


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    kind: AccountKind
    currency: str
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    account: Account
    amount: int


@dataclass(frozen=True, slots=True)
class Posting:
    """A balanced ledger transaction for one order."""

    transaction_id: str
    order_id: str
    kind: str
    entries: tuple[Entry, ...]

    def __post_init__(self) -> None:
        amounts = [e.amount for e in self.entries]
        if sum(amounts) != 0:
            raise ValueError(f"posting {self.transaction_id} does not balance")
        if 0 in amounts:
            raise ValueError(f"posting {self.transaction_id} has an empty entry")


@dataclass(frozen=True, slots=True)
class Posted:
    """A credit already in the books."""

    transaction_id: str
    user_id: str
    amount: int
    currency: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CreditContext:
    """What decides a credit for one order: its credit if any, its block, and the user's wallet."""

    credit: Posted | None
    blocked: str | None
    user_currency: str | None
    wallet_frozen: bool


@dataclass(frozen=True, slots=True)
class PaymentFact:
    """The payment behind an order, as its first PaymentSucceeded said: what a RetryCredit must match."""

    user_id: str
    amount: int
    currency: str
    provider_txn_id: str


@dataclass(frozen=True, slots=True)
class ParkedRetry:
    """A RetryCredit for an order with no recorded payment yet, kept until its PaymentSucceeded arrives (which
    clears it) or the park time runs out (then it is dead-lettered): its `claim` and the message as it came."""

    claim: PaymentFact
    message: RetryCredit
    envelope: Envelope


@dataclass(frozen=True, slots=True)
class PendingBlock:
    """A BlockCredit that waits for its order's payment (see `block_waits`): who it names and why it blocks."""

    user_id: str
    reason: str


NO_PAYMENT_FACT = "no_payment_fact"


@dataclass(frozen=True, slots=True)
class Unbacked:
    """Why a command has no payment behind it: a bounded `label` to count it by and a `reason` to read."""

    label: str
    reason: str


@dataclass(slots=True)
class OrderBooks:
    """What the books hold for one order: its credit, whether it was compensated, why it is blocked."""

    credit: Posted | None = None
    compensated: bool = False
    blocked: str | None = None


@dataclass(slots=True)
class BooksView:
    """The part of the books a batch of messages touches, read under the batch's order locks and kept up to date
    while the batch is decided: its orders, their payment facts, its users' wallet currencies and which of their
    wallets are frozen."""

    orders: dict[str, OrderBooks] = field(default_factory=dict)
    facts: dict[str, PaymentFact] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    frozen: set[str] = field(default_factory=set)
    parked: dict[str, PaymentFact] = field(default_factory=dict)
    """The claims of the parked retries of its orders (the first parked retry's, one per order)."""
    pending_blocks: dict[str, PendingBlock] = field(default_factory=dict)
    """The blocks of its orders that wait, with their parked retries, for the order's payment."""

    def order(self, order_id: str) -> OrderBooks:
        return self.orders.setdefault(order_id, OrderBooks())


@dataclass(slots=True)
class Changes:
    """What a batch writes, decided in full before anything is written: new postings with their time, blocks
    (new, or a new reason), users registered by their first credit, credits the fault knob dropped, and the
    payment facts of orders first paid in this batch, retries parked to wait for their payment, the orders
    whose parked retries their payment, recorded in this batch, clears, blocks that wait with those retries, and
    blocks a person's re-drive lifted."""

    postings: list[tuple[Posting, datetime]] = field(default_factory=list)
    blocks: dict[str, str] = field(default_factory=dict)
    registrations: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    facts: dict[str, PaymentFact] = field(default_factory=dict)
    parked: list[ParkedRetry] = field(default_factory=list)
    unparked: list[str] = field(default_factory=list)
    pending_blocks: dict[str, PendingBlock] = field(default_factory=dict)
    unblocks: set[str] = field(default_factory=set)
    """Orders whose block a person's re-drive lifted and credited (never also in `blocks`)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an order is not credited; `final` when no retry can change that (the order is then blocked)."""

    reason: str
    final: bool


ORDER_REFUNDED = "order refunded"

REJECTION_REASON_LIMIT = 200
"""The most characters the contract lets a CreditRejected's reason have."""


def clip(text: str) -> str:
    """`text` fitted into a CreditRejected's reason."""
    return contracts.base.clip(text, REJECTION_REASON_LIMIT)


def refusal(context: CreditContext, currency: str) -> Refusal | None:
    """Whether an order not yet credited may be credited in `currency`, and if not, why.

    A block (refund under way or done, an earlier final refusal) is final. A user the ledger does not know
    may still be registered, so that refusal is retryable. A payment in another currency than the user's
    wallet, or for a frozen wallet, can never be credited.
    """
    if context.blocked is not None:
        reason = context.blocked if context.blocked == ORDER_REFUNDED else f"blocked: {context.blocked}"
        return Refusal(reason, final=True)
    if context.user_currency is None:
        return Refusal("unknown user", final=False)
    if context.user_currency != currency:
        return Refusal(f"currency mismatch: the wallet is kept in {context.user_currency}, not {currency}", final=True)
    if context.wallet_frozen:
        return Refusal("wallet frozen", final=True)
    return None


def refund_follows(reason: str) -> bool:
    """Whether a block's reason says the order's money goes back to the user: the order was refunded, or the block
    is one a refund follows (a risk review's rejection, a person's refund: `contracts.commands.REFUND_BLOCKS`)."""
    return reason == ORDER_REFUNDED or reason.startswith(REFUND_BLOCKS)


def standing_block(current: str | None, new: str) -> str:
    """The reason an order's block holds once a block for `new` reaches it. The first reason stands, unless `new`
    says a refund follows and the first does not: a person's refund, or a review's rejection, that reaches an order
    the ledger had already blocked for a reason a re-drive may lift (a final refusal of its payment, the
    reconciler's block after its retries). Kept as it was, the block would let a later re-drive credit an order
    whose refund is under way, and the user would be paid twice."""
    if current is None or (refund_follows(new) and not refund_follows(current)):
        return new
    return current


def lifts_block(order: OrderBooks) -> bool:
    """Whether a person's re-drive (RedriveCredit) lifts the order's block before it is decided: only for an order
    blocked and not credited, never for a refunded order (its money went back to the user: crediting it would pay
    twice), and never for a block a refund follows (`refund_follows`), whose refund the ledger cannot see under way,
    whichever block of the order came first (`standing_block`). Payments' support API refuses those re-drives too;
    this holds whatever payments lets through."""
    return order.credit is None and order.blocked is not None and not refund_follows(order.blocked)


def unbacked(fact: PaymentFact | None, claimed: PaymentFact | None, what: str = "the retry") -> Unbacked | None:
    """Whether `what`'s `claimed` payment (a retry's, a re-drive's, a later payment event's) is the order's recorded
    payment `fact`, and if not, why.

    A retry that names no payment, an order the ledger has recorded no payment for, and a retry whose user,
    amount, currency or provider transaction id differ from the recorded payment are all refused: crediting
    any of them would move money no payment stands behind (or credit another user with this one's payment).
    """
    if claimed is None:
        return Unbacked("retry_without_payment_fact", "the retry carries no provider transaction id")
    if fact is None:
        return Unbacked(NO_PAYMENT_FACT, "the ledger has recorded no PaymentSucceeded for the order")
    differ = [
        f"{name} {mine!r} is not the paid {theirs!r}"
        for name, mine, theirs in (
            ("user", claimed.user_id, fact.user_id),
            ("amount", claimed.amount, fact.amount),
            ("currency", claimed.currency, fact.currency),
            ("provider_txn_id", claimed.provider_txn_id, fact.provider_txn_id),
        )
        if mine != theirs
    ]
    if differ:
        return Unbacked("payment_fact_mismatch", f"{what} does not match the payment: " + "; ".join(differ))
    return None


def unearned(credit: Posted, user_id: str, amount: int, currency: str, frozen: bool) -> Unbacked | None:
    """Whether a compensation for an order credited with `credit` may go to `user_id`'s wallet in `currency`, and if
    not, why. It goes only to the wallet the order credited, for at most what the order credited (the reconciler's
    and support's compensations both stay within it), and never to a frozen wallet: anything else would move money
    no order stands behind, or to someone the order does not belong to."""
    differ = [
        f"{name} {mine!r} is not the credited {theirs!r}"
        for name, mine, theirs in (("user", user_id, credit.user_id), ("currency", currency, credit.currency))
        if mine != theirs
    ]
    if differ:
        return Unbacked("compensation_mismatch", "the compensation does not match the credit: " + "; ".join(differ))
    if amount > credit.amount:
        return Unbacked("compensation_above_credit", f"a compensation is at most the credited {credit.amount}")
    if frozen:
        return Unbacked("wallet_frozen", "the wallet is frozen")
    return None


def block_waits(order: OrderBooks, fact: PaymentFact | None, parked: PaymentFact | None) -> bool:
    """Whether a BlockCredit must wait for the order's payment instead of blocking the order now.

    It waits when the order is neither credited nor blocked, the ledger has recorded no payment for it, and a
    retry of it is parked: the reconciler saw the order paid (it retries only those, and its retries of an order
    reach the ledger before its block, on the same partition), but the ledger's payments consumer has not yet
    consumed that payment (it lags, or the database was away), so the ledger has never had the chance to credit
    it. Blocking now would refuse that payment as "blocked" a moment later and refund money the ledger was about
    to credit. A block for an order with no parked retry blocks at once: an order rejected in risk review (never
    paid in the ledger's sense, never retried), one whose retries were refused, or one whose parked retries
    already expired without a payment.
    """
    return order.credit is None and order.blocked is None and fact is None and parked is not None


def wallet(user_id: str, currency: str) -> Account:
    return Account(f"wallet:{user_id}:{currency}", AccountKind.WALLET, currency, user_id)


@cache  # one per currency, built once
def topup_clearing(currency: str) -> Account:
    return Account(f"platform:topup_clearing:{currency}", AccountKind.TOPUP_CLEARING, currency)


@cache  # one per currency, built once
def compensation_account(currency: str) -> Account:
    return Account(f"platform:compensation:{currency}", AccountKind.COMPENSATION, currency)


def credit(order_id: str, user_id: str, amount: int, currency: str) -> Posting:
    """The credit for a paid order: the wallet gains what the user paid, the platform's clearing owes it."""
    return Posting(
        transaction_id=deterministic_id("credit", order_id),
        order_id=order_id,
        kind="credit",
        entries=(Entry(topup_clearing(currency), -amount), Entry(wallet(user_id, currency), amount)),
    )


def compensation(order_id: str, user_id: str, amount: int, currency: str) -> Posting:
    """A delay compensation: the wallet gains `amount`, paid by the platform's compensation account."""
    return Posting(
        transaction_id=deterministic_id("compensation", order_id),
        order_id=order_id,
        kind="compensation",
        entries=(
            Entry(compensation_account(currency), -amount),
            Entry(wallet(user_id, currency), amount),
        ),
    )


def drops_credit(order_id: str, share: float) -> bool:
    """Development fault knob: the same orders are dropped in every process, chosen by hash."""
    if share <= 0:
        return False
    bucket = int.from_bytes(hashlib.sha256(order_id.encode()).digest()[:8], "big") / 2**64
    return bucket < share
