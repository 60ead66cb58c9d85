"""Accounts, postings and the rules of double entry. Pure: no I/O."""

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cache

from contracts.codec import deterministic_id


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


@dataclass(slots=True)
class OrderBooks:
    """What the books hold for one order: its credit, whether it was compensated, why it is blocked."""

    credit: Posted | None = None
    compensated: bool = False
    blocked: str | None = None


@dataclass(slots=True)
class BooksView:
    """The part of the books a batch of messages touches, read under the batch's order locks and kept up to date
    while the batch is decided: its orders, its users' wallet currencies and which of their wallets are frozen."""

    orders: dict[str, OrderBooks] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    frozen: set[str] = field(default_factory=set)

    def order(self, order_id: str) -> OrderBooks:
        return self.orders.setdefault(order_id, OrderBooks())


@dataclass(slots=True)
class Changes:
    """What a batch writes, decided in full before anything is written: new postings with their time, blocks
    (new, or a new reason), users registered by their first credit, and credits the fault knob dropped."""

    postings: list[tuple[Posting, datetime]] = field(default_factory=list)
    blocks: dict[str, str] = field(default_factory=dict)
    registrations: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an order is not credited; `final` when no retry can change that (the order is then blocked)."""

    reason: str
    final: bool


ORDER_REFUNDED = "order refunded"


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
