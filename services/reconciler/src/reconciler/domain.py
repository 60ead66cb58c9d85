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
- Why an order went overdue (`FlagCause`, on the flag): `payment_late` when its PaymentSucceeded reached the
  reconciler's input (its record's broker timestamp, `payment_arrived_at`) only after the deadline, so nothing on the
  credit path could have credited it in time (a lost provider callback that payments' query found late, payments'
  outbox behind); `credit_missing` otherwise (the payment was there in time, the credit was not), and for a risk
  review past its time. Which one changes only what on-call is told (metrics, alerts): the user hears `delayed`
  and the credit is retried the same way for both.
- A final CreditRejected (unknown user, frozen wallet, ...) skips the retries: the ledger has blocked
  the order, so the refund can go at once. One read before the order's PaymentSucceeded (the topics are
  read side by side, so a rejection can come first) is kept, and the payment then refunds at once.
- A refund that fails escalates the order to a person (`needs_support`).
- A BlockCredit or IssueRefund is answered (the ledger's final rejection or credit, the refund's outcome) or sent
  again: the command or its answer can be lost on the way (a record the broker lost, a dead letter replayed late).
  After `answer_wait_s`, doubling each time, the same command goes again under an event id of its own (named by
  the command's and the re-send's numbers, so a re-send repeated after a crash is still a repeat), at most
  `answer_resends` times: the ledger and payments answer a re-send of a command they applied with the outcome they
  have and move nothing again (no second block, no second refund), so a re-send heals a lost answer as well as a
  lost command. After the last wait the order goes to a person (`needs_support`, `Escalated` with reason
  `no_answer`, a support case). It stays in its phase: an answer that comes late still moves it on (the ledger's
  rejection refunds it, the refund's outcome settles it, a credit closes it), only the clock leaves it alone from
  then on. So no paid order waits for an answer forever.
- What became of a remediation step is an effect when the reconciler learns it (`Remediated`): a credit that
  lands while the order is retrying means RetryCredit succeeded; the last retry sent with no credit by its
  backoff, or the ledger's final rejection while retrying, means it failed (a credit landing after that,
  before the block, closes the order and changes nothing counted); RefundSucceeded or RefundFailed says how
  IssueRefund ended. An escalation to `needs_support` is `Escalated`, naming the action under way and why.
  Each comes from a change of phase, so an order counts each outcome once however often events repeat.
- An order a person has to own is announced for a support case (`CaseOpened`, on support.cases): escalated to
  `needs_support` (severity page), a risk-review hold still open at its deadline (`review_overdue`, warning),
  a credit without a payment (`credit_without_payment`, page). Each comes from the same change of phase as
  the escalation, flag or anomaly it stands beside, so an order asks once per kind, and the announcement's id
  is deterministic per order and kind, so a repeat after a crash opens nothing more.
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
- An order that is settled (credited, refunded, or its payment failed) is kept for `retention_s` in event
  time after it settled, then dropped; an event for an order the table no longer has, older than the
  retention, is ignored rather than starting the order again, after a restart or a rebalance as before it (the
  horizon is kept on the table's changelog). An escalated order is kept until a person settles it.

The transitions (join.py, review.py, timers.py) change the state they are given in place and return the
effects; the engine gives each one a copy of the stored state, so a stored state only ever changes when
the engine stores the new one. Every change is noted in the order's history (`note`), which is how the
engine tells a change from a repeat.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from enum import StrEnum
from sys import intern
from typing import Any

import contracts.base
from contracts.events import CaseKind, CaseSeverity, OrderStatus

HISTORY_LIMIT = 60
REASON_LIMIT = 160
"""The longest reason the reconciler puts in a command or status change. Contracts allow 200 characters, and
a consumer may answer with our reason behind a prefix of its own in a field of 200 (the ledger's CreditRejected
says "blocked: <BlockCredit's reason>"), so ours leave room for that."""
WEEK_S = 7 * 24 * 3600.0


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


class Outcome(StrEnum):
    """How a remediation step ended, as far as the reconciler knows (outcomes are not exclusive: a refund
    that failed is then escalated)."""

    REQUESTED = "requested"
    RESENT = "resent"
    """Sent again under an event id of its own: no answer came to the first send within the wait (timers.py)."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ESCALATED = "escalated"
    SKIPPED = "skipped"
    """Never sent: a GrantCompensation for a late order in a currency the compensation does not list."""


class EscalationReason(StrEnum):
    """Why an order went to a person (`needs_support`)."""

    REFUND_FAILED = "refund_failed"
    CREDITED_AFTER_REFUND = "credited_after_refund"
    NO_ANSWER = "no_answer"


@dataclass(frozen=True, slots=True)
class Policy:
    """Thresholds, remediation and retention settings."""

    threshold_s: float = 120.0
    channel_thresholds_s: Mapping[str, float] = field(default_factory=dict)
    product_thresholds_s: Mapping[str, float] = field(default_factory=dict)
    retry_attempts: int = 3
    retry_backoff_s: float = 2.0
    compensation: Mapping[str, int] = field(default_factory=dict)
    """Delay compensation per late credit by currency, each in that currency's minor units (JPY has none, CNY
    fen): one number for every currency would be 100 times more on a JPY order than on a CNY one."""
    compensation_minor: int = 0
    """The compensation of a currency `compensation` does not list (RECONCILER_COMPENSATION_MINOR, one number for
    every currency, which the settings never set beside RECONCILER_COMPENSATION)."""
    retention_s: float = WEEK_S
    answer_wait_s: float = 300.0
    """How long a BlockCredit or IssueRefund waits for its answer before it is sent again, doubling each time. The
    default outlasts the ledger's park time (a BlockCredit behind a parked retry waits for the order's payment up to
    300 s before it is answered)."""
    answer_resends: int = 8
    """How many times an unanswered BlockCredit or IssueRefund is sent again before the order goes to a person: with
    the default wait, about 43 hours after the first send. A refund can stay pending at its provider for a day (bank
    cards): payments' own case warns of one after 24 h (refunds.STUCK_AFTER_S), before this pages. The re-sends that
    heal a lost command or a lost answer come early (5, 15, 35 minutes); a paid order stuck before its refund is
    found by payments' money audit within minutes of its grace."""

    def threshold(self, channel: str, product: str | None = None) -> timedelta:
        """Product beats channel beats the default."""
        if product is not None and product in self.product_thresholds_s:
            return timedelta(seconds=self.product_thresholds_s[product])
        return timedelta(seconds=self.channel_thresholds_s.get(channel, self.threshold_s))

    def compensation_for(self, currency: str, amount: int) -> int:
        """The delay compensation of a late order of `amount` in `currency`, at most the order's amount (the ledger
        refuses one above the order's credit); 0 for none."""
        return min(self.compensation.get(currency, self.compensation_minor), amount)

    def backoff(self, attempt: int) -> timedelta:
        return timedelta(seconds=self.retry_backoff_s * 2 ** (attempt - 1))

    def remaining_retry_time(self, attempt: int) -> timedelta:
        return sum((self.backoff(a) for a in range(attempt, self.retry_attempts + 1)), timedelta())

    def answer_wait(self, resends: int) -> timedelta:
        """The wait for an answer after the first send (`resends` 0) or the `resends`-th re-send."""
        return timedelta(seconds=self.answer_wait_s * 2**resends)

    @property
    def retention(self) -> timedelta:
        return timedelta(seconds=self.retention_s)


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
    amount: int = 0
    """A GrantCompensation's amount, in the order's currency's minor units (the other commands carry the order's)."""
    resent: int = 0
    """0 for the first send; n for the n-th re-send of the same command (its `attempt`), under an event id naming n
    (adapters/announcer.py): the ledger or payments answers it even when it applied the first send."""


class FlagCause(StrEnum):
    """Why an order was flagged overdue (rules in the module docstring)."""

    CREDIT_MISSING = "credit_missing"
    """Its payment was known by the deadline (or a risk review ran past its time): the credit is what is missing."""
    PAYMENT_LATE = "payment_late"
    """Its PaymentSucceeded reached the reconciler's input only after the deadline."""


@dataclass(frozen=True, slots=True)
class Flagged:
    """The order was flagged overdue; `late_by_s` is flag time minus deadline (how late the user is), `detection_s`
    flag time minus when it could first have been flagged: the deadline, or for `payment_late` the payment's arrival
    (the detector cannot flag a payment it has not read; the wait before that is the provider's and payments')."""

    deadline: datetime
    late_by_s: float
    cause: FlagCause
    detection_s: float


@dataclass(frozen=True, slots=True)
class Anomaly:
    kind: str


@dataclass(frozen=True, slots=True)
class Remediated:
    """The reconciler learned how a remediation step it sent ended, or left one unsent (`Outcome.SKIPPED`)."""

    action: CommandKind
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Escalated:
    """The order went to a person (`needs_support`) while `action` was the step under way."""

    action: CommandKind
    reason: EscalationReason


@dataclass(frozen=True, slots=True)
class CaseOpened:
    """The order needs a person to own it: payments opens a support case (one per order and kind)."""

    kind: CaseKind
    severity: CaseSeverity
    reason: str


CASE_SEVERITY = {
    CaseKind.NEEDS_SUPPORT: CaseSeverity.PAGE,
    CaseKind.REVIEW_OVERDUE: CaseSeverity.WARNING,
    CaseKind.CREDIT_WITHOUT_PAYMENT: CaseSeverity.PAGE,
}
"""How loudly each kind of case asks for an owner at first (payments re-pages one step higher)."""


Effect = StatusChange | Command | Flagged | Anomaly | Remediated | Escalated | CaseOpened


@dataclass(slots=True)
class OrderState:
    """What the reconciler knows about one order. Transitions change it in place (see the module docstring)."""

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
    settled_at: datetime | None = None
    review: str = ""
    anomaly: str | None = None
    status: OrderStatus = OrderStatus.PAID
    sequence: int = 0
    history: tuple[tuple[str, datetime], ...] = ()
    provider_txn_id: str = ""
    """The PaymentSucceeded's provider transaction id: a RetryCredit carries it, the ledger checks it."""
    payment_arrived_at: datetime | None = None
    """When the PaymentSucceeded that set the deadline reached payments.events (its record's timestamp), if known:
    later than the deadline, the order's flag says `payment_late` (timers.py). None for an order whose payment came
    as an OrderHeld (its deadline runs from the review) and for states stored before it was kept."""
    rejected_early: str = ""
    """The reason of a final CreditRejected read before the order's payment, or before the release of a held order
    (the ledger answers the payment published at the release; the topics are read side by side): the payment or
    the release, when it comes, refunds at once."""
    sent_reason: str = ""
    """The reason of the BlockCredit or IssueRefund the order waits to hear about: a re-send carries it again."""
    resends: int = 0
    """How often that command was sent again with no answer (timers.py)."""
    landed: tuple[tuple[int, OrderStatus], ...] = ()
    """Status changes that rounds undone after sending them may have left on the status topic past `sequence`, as
    (sequence, status): the next status of the order that differs is numbered past them (adapters/announcer.py).
    On the changelog with the rest of the state, so whoever owns the order next numbers past them too."""

    @property
    def paid(self) -> bool:
        return self.paid_at is not None

    @property
    def credited(self) -> bool:
        return self.credited_at is not None

    def copy(self) -> "OrderState":
        # Slot by slot (_copy): dataclasses.replace rebuilds through __init__ and was half the engine's time.
        return _copy(self)

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _FIELDS}
        for key in _TIMES:
            value = data[key]
            data[key] = value.isoformat() if value else None
        data["phase"] = self.phase.value
        data["status"] = self.status.value
        data["history"] = [[what, at.isoformat()] for what, at in self.history]
        data["landed"] = [[sequence, status.value] for sequence, status in self.landed]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "OrderState":
        values = dict(data)
        for key in _TIMES:
            values[key] = datetime.fromisoformat(values[key]) if values.get(key) else None
        values["phase"] = Phase(values["phase"])
        values["status"] = OrderStatus(values["status"])
        # A restored table holds a million of these: the few distinct channels, currencies and history notes
        # are shared, not copied into every state.
        for key in _SHARED:
            if values.get(key):
                values[key] = intern(values[key])
        values["history"] = tuple((intern(str(a)), datetime.fromisoformat(b)) for a, b in values.get("history", ()))
        values["landed"] = tuple((int(n), OrderStatus(status)) for n, status in values.get("landed") or ())
        return cls(**values)


_FIELDS = tuple(f.name for f in fields(OrderState))
_NEW = object.__new__


def _copier() -> Callable[[OrderState], OrderState]:
    """A function copying an OrderState field by field in plain assignments, written out for its fields as
    dataclasses writes __init__: a loop over the slots' descriptors (a Python call per field) took 3.1 us a copy, a
    tenth of the engine's time, and every field added cost the engine more."""
    body = "".join(f"    new.{name} = state.{name}\n" for name in _FIELDS)
    source = f"def copy(state):\n    new = _NEW(OrderState)\n{body}    return new\n"
    namespace: dict[str, Any] = {"_NEW": _NEW, "OrderState": OrderState}
    exec(source, namespace)  # noqa: S102 - the source is made of the dataclass's own field names
    copier: Callable[[OrderState], OrderState] = namespace["copy"]
    return copier


_copy = _copier()
_TIMES = (
    "paid_at",
    "credited_at",
    "deadline",
    "next_action_at",
    "flagged_at",
    "held_until",
    "settled_at",
    "payment_arrived_at",
)
_SHARED = ("currency", "channel", "product", "review", "anomaly", "sent_reason")
SETTLED = (Phase.CREDITED, Phase.REFUNDED, Phase.PAYMENT_FAILED)
AWAITING_ANSWER = {Phase.BLOCKING: CommandKind.BLOCK_CREDIT, Phase.REFUNDING: CommandKind.ISSUE_REFUND}
"""The phases that wait for the answer to a command, and that command."""


def clip(text: str, limit: int = REASON_LIMIT) -> str:
    """`text` fitted into `limit` characters (contracts.base.clip), the reconciler's reason limit by default."""
    return contracts.base.clip(text, limit)


def note(state: OrderState, what: str, at: datetime) -> None:
    history = state.history
    state.history = (*history, (what, at)) if len(history) < HISTORY_LIMIT else (*history[1:], (what, at))


def status_change(
    state: OrderState, status: OrderStatus, reason: str, at: datetime, eta: datetime | None = None
) -> StatusChange:
    state.sequence += 1
    change = StatusChange(status, state.status, clip(reason), state.sequence, eta)
    state.status = status
    note(state, f"status:{status.value}", at)
    return change


def command(state: OrderState, command: Command, at: datetime) -> Command:
    note(state, f"command:{command.kind.value}#{command.attempt}", at)
    return command


def await_answer(state: OrderState, sent: Command, now: datetime, policy: Policy) -> Command:
    """`sent` (a BlockCredit or IssueRefund) goes out now: the order waits for its answer, and sends it again if none
    comes within the wait (timers.py)."""
    state.sent_reason, state.resends, state.next_action_at = sent.reason, 0, now + policy.answer_wait(0)
    return command(state, sent, now)


def case(kind: CaseKind, reason: str) -> CaseOpened:
    return CaseOpened(kind, CASE_SEVERITY[kind], clip(reason))


def settle(state: OrderState, phase: Phase, at: datetime) -> None:
    """The order needs nothing more: it is kept for the retention after `at` (event time), then dropped."""
    state.phase, state.next_action_at, state.settled_at = phase, None, at


def close_credited(state: OrderState, now: datetime, policy: Policy) -> list[Effect]:
    late = state.flagged_at is not None
    assert state.credited_at is not None
    assert state.paid_at is not None
    settle(state, Phase.CREDITED, max(state.credited_at, state.paid_at))
    effects: list[Effect] = [
        status_change(state, OrderStatus.CREDITED, "credited after a delay" if late else "credit posted", now)
    ]
    if late:
        effects += compensate(state, now, policy)
    return effects


def compensate(state: OrderState, now: datetime, policy: Policy) -> list[Effect]:
    """A late credit's delay compensation in the order's currency. An order in a currency the per-currency
    compensation does not list gets none, noted in its timeline and counted (remediations, outcome `skipped`), so
    on-call sees a currency left out; one listed with 0 gets none on purpose."""
    granted = policy.compensation_for(state.currency, state.amount)
    if granted > 0:
        return [
            command(state, Command(CommandKind.GRANT_COMPENSATION, amount=granted), now),
            status_change(state, OrderStatus.COMPENSATED, "compensation for the delay", now),
        ]
    if policy.compensation and state.currency not in policy.compensation:
        note(state, f"compensation_skipped:{state.currency}", now)
        return [Remediated(CommandKind.GRANT_COMPENSATION, Outcome.SKIPPED)]
    return []
