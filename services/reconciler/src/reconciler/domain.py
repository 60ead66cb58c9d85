"""One order's join of payments and credits, and its remediation, as a pure state machine.

Events and clock ticks go in; the new state and effects (status changes, commands) come out.

Rules written down:
- The user-facing status starts at `paid` (the provider already told the user). A normal order then
  gets one status change: `credited`.
- An order is overdue when it is paid and has no credit by `paid_at + threshold`, in event time, and
  the credit stream is known complete up to that deadline (`safe_time`, see watermarks.py). A credit
  that arrives first keeps the order from ever being flagged.
- Threshold precedence: the order's product (`product_thresholds_s`) beats its payment channel
  (`channel_thresholds_s`), which beats the default `threshold_s`. An order without a product (older
  producers) uses its channel's threshold or the default.
- Overdue: `delayed` to the user, RetryCredit attempt 1; further attempts with exponential backoff;
  after the last attempt BlockCredit (the ledger credits nothing for the order from then on, or tells
  us it already had), and only after the ledger's final rejection IssueRefund. So money that was
  credited is never refunded: a credit that lands before the block wins and closes the order.
- A final CreditRejected (unknown user, frozen wallet, ...) skips the retries: the ledger has blocked
  the order, so the refund can go at once.
- A refund that fails escalates the order to a person (`needs_support`).
- A credit with no payment (none, or only a failed one) is an anomaly once the payment stream is complete
  past credit + threshold.
- Risk review (see review.py): OrderHeld stands in for the payment (payments publishes
  PaymentSucceeded only on release). The deadline becomes `expected_release_at + threshold` and the
  user hears `under_review` with the expected release as the estimated time. No credit is retried
  while the order is held: the risk team decides. A hold still open at its deadline is flagged once
  (on-call sees it) and the user hears `delayed`. A release makes the order wait for its credit until
  `released_at + threshold`, then remediation runs as for any order, without a second flag. A
  rejection sends BlockCredit and, after the ledger's final rejection, IssueRefund; the user is told
  next when the money is refunded.
- Every event is applied idempotently: a repeat changes nothing and emits nothing.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from contracts.events import (
    CreditPosted,
    CreditRejected,
    OrderStatus,
    PaymentFailed,
    PaymentSucceeded,
    RefundFailed,
    RefundSucceeded,
)

HISTORY_LIMIT = 60
REASON_LIMIT = 160
"""The longest reason the reconciler puts in a command or status change. Contracts allow 200 characters, and
a consumer may answer with our reason behind a prefix of its own in a field of 200 (the ledger's CreditRejected
says "blocked: <BlockCredit's reason>"), so ours leave room for that."""


def clip(text: str, limit: int = REASON_LIMIT) -> str:
    """`text`, cut to `limit` characters (counted as Python counts them, as pydantic does) with a mark."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class Phase(StrEnum):
    OPEN = "open"
    HELD = "held"
    AWAITING_CREDIT = "awaiting_credit"
    RETRYING = "retrying"
    BLOCKING = "blocking"
    REFUNDING = "refunding"
    CREDITED = "credited"
    REFUNDED = "refunded"
    ESCALATED = "escalated"
    PAYMENT_FAILED = "payment_failed"


class CommandKind(StrEnum):
    RETRY_CREDIT = "RetryCredit"
    BLOCK_CREDIT = "BlockCredit"
    ISSUE_REFUND = "IssueRefund"
    GRANT_COMPENSATION = "GrantCompensation"


@dataclass(frozen=True, slots=True)
class Policy:
    """Thresholds and remediation settings."""

    threshold_s: float = 120.0
    channel_thresholds_s: Mapping[str, float] = field(default_factory=dict)
    product_thresholds_s: Mapping[str, float] = field(default_factory=dict)
    retry_attempts: int = 3
    retry_backoff_s: float = 2.0
    compensation_minor: int = 0

    def threshold(self, channel: str, product: str | None = None) -> timedelta:
        """Product beats channel beats the default."""
        if product is not None and product in self.product_thresholds_s:
            return timedelta(seconds=self.product_thresholds_s[product])
        return timedelta(seconds=self.channel_thresholds_s.get(channel, self.threshold_s))

    def backoff(self, attempt: int) -> timedelta:
        return timedelta(seconds=self.retry_backoff_s * 2 ** (attempt - 1))

    def remaining_retry_time(self, attempt: int) -> timedelta:
        return sum((self.backoff(a) for a in range(attempt, self.retry_attempts + 1)), timedelta())


@dataclass(frozen=True, slots=True)
class StatusChange:
    status: OrderStatus
    previous: OrderStatus
    reason: str
    sequence: int
    estimated_credit_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Command:
    kind: CommandKind
    attempt: int = 1
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Flagged:
    """The order was flagged overdue; `late_by_s` is flag time minus deadline."""

    deadline: datetime
    late_by_s: float


@dataclass(frozen=True, slots=True)
class Anomaly:
    kind: str


Effect = StatusChange | Command | Flagged | Anomaly


@dataclass(frozen=True, slots=True)
class OrderState:
    """What the reconciler knows about one order."""

    order_id: str
    partition: int = -1
    user_id: str = ""
    amount: int = 0
    currency: str = ""
    channel: str = ""
    product: str | None = None
    phase: Phase = Phase.OPEN
    paid_at: datetime | None = None
    credited_at: datetime | None = None
    deadline: datetime | None = None
    attempts: int = 0
    next_action_at: datetime | None = None
    flagged_at: datetime | None = None
    held_until: datetime | None = None
    review: str = ""
    anomaly: str | None = None
    status: OrderStatus = OrderStatus.PAID
    sequence: int = 0
    history: tuple[tuple[str, str], ...] = ()

    @property
    def paid(self) -> bool:
        return self.paid_at is not None

    @property
    def credited(self) -> bool:
        return self.credited_at is not None

    def to_json(self) -> dict[str, Any]:
        # Field by field rather than dataclasses.asdict: asdict deep-copies every value, and this runs on
        # every state change (it was two thirds of the engine's time on the replayed log).
        data = {name: getattr(self, name) for name in _FIELDS}
        for key in _TIMES:
            value = data[key]
            data[key] = value.isoformat() if value else None
        data["phase"] = self.phase.value
        data["status"] = self.status.value
        data["history"] = [list(h) for h in self.history]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "OrderState":
        values = dict(data)
        for key in _TIMES:
            values[key] = datetime.fromisoformat(values[key]) if values.get(key) else None
        values["phase"] = Phase(values["phase"])
        values["status"] = OrderStatus(values["status"])
        values["history"] = tuple((str(a), str(b)) for a, b in values.get("history", ()))
        return cls(**values)


_FIELDS = tuple(f.name for f in fields(OrderState))
_TIMES = ("paid_at", "credited_at", "deadline", "next_action_at", "flagged_at", "held_until")

Result = tuple[OrderState, list[Effect]]


def note(state: OrderState, what: str, at: datetime) -> OrderState:
    return replace(state, history=(*state.history, (what, at.isoformat()))[-HISTORY_LIMIT:])


def status_change(
    state: OrderState, status: OrderStatus, reason: str, at: datetime, eta: datetime | None = None
) -> Result:
    change = StatusChange(status, state.status, clip(reason), state.sequence + 1, eta)
    state = note(replace(state, status=status, sequence=state.sequence + 1), f"status:{status.value}", at)
    return state, [change]


def command(state: OrderState, command: Command, at: datetime) -> Result:
    return note(state, f"command:{command.kind.value}#{command.attempt}", at), [command]


def then(first: Result, step: Callable[..., Result], *args: Any) -> Result:
    """Apply `step(state, *args)` after `first`, keeping the effects of both in order."""
    state, effects = first
    state, more = step(state, *args)
    return state, effects + more


def close_credited(state: OrderState, now: datetime, policy: Policy) -> Result:
    late = state.flagged_at is not None
    state = replace(state, phase=Phase.CREDITED, next_action_at=None)
    result = status_change(state, OrderStatus.CREDITED, "credited after a delay" if late else "credit posted", now)
    if late and policy.compensation_minor > 0:
        result = then(result, command, Command(CommandKind.GRANT_COMPENSATION), now)
        result = then(result, status_change, OrderStatus.COMPENSATED, "compensation for the delay", now)
    return result


def _start_refund(state: OrderState, reason: str, now: datetime) -> Result:
    state = replace(state, phase=Phase.REFUNDING, next_action_at=None)
    result = command(state, Command(CommandKind.ISSUE_REFUND, reason=clip(reason)), now)
    if state.status is not OrderStatus.REMEDIATING and state.review != "rejected":
        result = then(result, status_change, OrderStatus.REMEDIATING, f"refunding: {reason}", now)
    return result


def on_payment_succeeded(state: OrderState, event: PaymentSucceeded, now: datetime, policy: Policy) -> Result:
    """The provider confirmed the payment: the order is owed a credit by its deadline."""
    if state.paid:
        return state, []
    state = replace(
        state,
        user_id=event.user_id,
        amount=event.amount,
        currency=event.currency,
        channel=event.channel,
        product=event.product,
        paid_at=event.paid_at,
        deadline=event.paid_at + policy.threshold(event.channel, event.product),
        phase=Phase.AWAITING_CREDIT if state.phase in (Phase.OPEN, Phase.PAYMENT_FAILED) else state.phase,
    )
    state = note(state, "paid", event.paid_at)
    if state.credited:
        return close_credited(state, now, policy)
    return state, []


def on_payment_failed(state: OrderState, event: PaymentFailed, now: datetime, policy: Policy) -> Result:
    """The payment failed: nothing is owed (a success, earlier or later, wins)."""
    if state.paid or state.phase is Phase.PAYMENT_FAILED:
        return state, []
    state = replace(state, user_id=event.user_id, channel=event.channel, phase=Phase.PAYMENT_FAILED)
    return note(state, "payment_failed", event.failed_at), []


def on_credit_posted(state: OrderState, event: CreditPosted, now: datetime, policy: Policy) -> Result:
    """The ledger credited the wallet."""
    if state.credited:
        return state, []
    state = note(replace(state, credited_at=event.credited_at), "credited", event.credited_at)
    if not state.user_id:
        state = replace(state, user_id=event.user_id, amount=event.amount, currency=event.currency)
    if not state.paid:
        return state, []
    if state.phase in (Phase.REFUNDING, Phase.REFUNDED):
        state = replace(state, phase=Phase.ESCALATED, anomaly="credited_after_refund")
        return then(
            (state, [Anomaly("credited_after_refund")]),
            status_change,
            OrderStatus.NEEDS_SUPPORT,
            "credited while a refund was under way",
            now,
        )
    return close_credited(state, now, policy)


def on_credit_rejected(state: OrderState, event: CreditRejected, now: datetime, policy: Policy) -> Result:
    """The ledger refused the credit. A final refusal means the order can never be credited: refund."""
    state = note(state, f"credit_rejected:{'final' if event.final else 'retryable'}:{event.reason}", event.rejected_at)
    if not event.final or state.credited or not state.paid:
        return state, []
    if state.phase not in (Phase.AWAITING_CREDIT, Phase.RETRYING, Phase.BLOCKING):
        return state, []
    return _start_refund(state, event.reason, now)


def on_refund_succeeded(state: OrderState, event: RefundSucceeded, now: datetime, policy: Policy) -> Result:
    if state.phase is not Phase.REFUNDING:
        return state, []
    state = note(replace(state, phase=Phase.REFUNDED), "refunded", event.refunded_at)
    return status_change(state, OrderStatus.REFUNDED, "refunded to the original payment method", now)


def on_refund_failed(state: OrderState, event: RefundFailed, now: datetime, policy: Policy) -> Result:
    if state.phase is not Phase.REFUNDING:
        return state, []
    state = note(replace(state, phase=Phase.ESCALATED), f"refund_failed:{event.reason}", event.failed_at)
    return status_change(state, OrderStatus.NEEDS_SUPPORT, f"refund failed: {event.reason}", now)


def wake_time(state: OrderState, policy: Policy) -> tuple[str, datetime] | None:
    """When the order next needs the clock: ('deadline', t) against safe time, ('action', t) against now."""
    if state.phase is Phase.AWAITING_CREDIT and state.deadline is not None:
        return "deadline", state.deadline
    if state.phase is Phase.HELD and state.flagged_at is None and state.deadline is not None:
        return "deadline", state.deadline
    if state.phase is Phase.RETRYING and state.next_action_at is not None:
        return "action", state.next_action_at
    if state.credited and not state.paid and state.anomaly is None:  # open, or its payment failed
        assert state.credited_at is not None
        return "deadline", state.credited_at + policy.threshold(state.channel, state.product)
    return None


def on_tick(state: OrderState, now: datetime, safe_time: datetime, policy: Policy) -> Result:
    """Let time pass: flag an overdue order or a review past its time, retry, or give up and block the credit."""
    deadline = state.deadline
    due = deadline is not None and deadline <= safe_time
    if state.phase is Phase.HELD and state.flagged_at is None and due:
        assert deadline is not None
        state = note(replace(state, flagged_at=now), "flagged_overdue:review", now)
        result: Result = (state, [Flagged(deadline, (now - deadline).total_seconds())])
        return then(result, status_change, OrderStatus.DELAYED, "the review is taking longer than expected", now)
    if state.phase is Phase.AWAITING_CREDIT and due:
        assert deadline is not None
        first = state.flagged_at is None  # an order flagged while held is not flagged again
        flagged_at = now if first else state.flagged_at
        state = replace(
            state, phase=Phase.RETRYING, attempts=1, flagged_at=flagged_at, next_action_at=now + policy.backoff(1)
        )
        state = note(state, "flagged_overdue", now)
        result = (state, [Flagged(deadline, (now - deadline).total_seconds())] if first else [])
        if state.status is not OrderStatus.DELAYED:
            eta = now + policy.remaining_retry_time(1)
            result = then(result, status_change, OrderStatus.DELAYED, "not credited in time; retrying", now, eta)
        return then(result, command, Command(CommandKind.RETRY_CREDIT, 1), now)
    if state.phase is Phase.RETRYING and state.next_action_at is not None and state.next_action_at <= now:
        if state.attempts < policy.retry_attempts:
            attempt = state.attempts + 1
            state = replace(state, attempts=attempt, next_action_at=now + policy.backoff(attempt))
            return command(state, Command(CommandKind.RETRY_CREDIT, attempt), now)
        state = replace(state, phase=Phase.BLOCKING, next_action_at=None)
        result = command(state, Command(CommandKind.BLOCK_CREDIT, reason="credit retries exhausted"), now)
        return then(result, status_change, OrderStatus.REMEDIATING, "could not credit; preparing a refund", now)
    if (
        state.credited
        and not state.paid
        and state.anomaly is None
        and state.credited_at is not None
        and state.credited_at + policy.threshold(state.channel, state.product) <= safe_time
    ):
        state = note(replace(state, anomaly="credit_without_payment"), "anomaly:credit_without_payment", now)
        return state, [Anomaly("credit_without_payment")]
    return state, []
