"""What time does to one order: deadlines judged against the safe time, retries and unanswered commands against
the wall clock, and the end of a settled order's retention. Pure: no I/O. Rules in domain.py's docstring."""

from datetime import datetime

from contracts.commands import REVIEW_REJECTED_BLOCK
from contracts.events import CaseKind, OrderStatus
from reconciler.domain import (
    AWAITING_ANSWER,
    SETTLED,
    Anomaly,
    Command,
    CommandKind,
    Effect,
    Escalated,
    EscalationReason,
    FlagCause,
    Flagged,
    OrderState,
    Outcome,
    Phase,
    Policy,
    Remediated,
    await_answer,
    case,
    clip,
    command,
    note,
    status_change,
)

RETRIES_EXHAUSTED = "credit retries exhausted"
"""The reason of the BlockCredit sent after the last RetryCredit."""

Wake = tuple[str, datetime]
"""('deadline', t): due once the safe time reaches t; ('action', t): due once the wall clock reaches t."""


def wake_time(state: OrderState, policy: Policy) -> Wake | None:
    """When the order next needs the clock, if it does."""
    if state.phase is Phase.AWAITING_CREDIT and state.deadline is not None:
        return "deadline", state.deadline
    if state.phase is Phase.HELD and state.flagged_at is None and state.deadline is not None:
        return "deadline", state.deadline
    if state.phase is Phase.RETRYING and state.next_action_at is not None:
        return "action", state.next_action_at
    phase = state.phase  # by identity, as above: an enum's hash (`in AWAITING_ANSWER`) is a Python call, every event
    if (phase is Phase.BLOCKING or phase is Phase.REFUNDING) and state.status is not OrderStatus.NEEDS_SUPPORT:
        return "action", _answer_due(state, policy)  # a person's once escalated
    if state.credited and not state.paid and state.anomaly is None:  # open, or its payment failed
        assert state.credited_at is not None
        return "deadline", state.credited_at + policy.threshold(state.channel, state.product)
    return None


def settled_at(state: OrderState, policy: Policy) -> datetime | None:
    """When the order settled, if it is settled and needs the clock no more: it leaves the table a retention
    later (judged against the safe time, like a deadline).

    An order known only from the ledger's refusals (a CreditRejected read before any payment, which the payment
    would answer with a refund at once) waits for nothing the clock could bring, so it counts as settled at its
    last event: a payment read within the retention still refunds at once, and a refusal of an order never paid
    (only the ledger writes ledger.events, so a stray one is rare) leaves the table like any settled order instead
    of staying in it for good."""
    if state.phase in SETTLED and state.settled_at is not None and wake_time(state, policy) is None:
        return state.settled_at
    if state.phase is Phase.OPEN and not state.paid and not state.credited and state.history:
        return max(at for _, at in state.history)
    return None


def on_tick(state: OrderState, now: datetime, safe_time: datetime, policy: Policy) -> list[Effect]:
    """Let time pass: flag an overdue order or a review past its time, retry, or give up and block the credit."""
    deadline = state.deadline
    due = deadline is not None and deadline <= safe_time
    if state.phase is Phase.HELD and state.flagged_at is None and due:
        assert deadline is not None
        state.flagged_at = now
        note(state, "flagged_overdue:review", now)
        change = status_change(state, OrderStatus.DELAYED, "the review is taking longer than expected", now)
        expected = state.held_until.isoformat(timespec="seconds") if state.held_until else "unknown"
        overdue = case(CaseKind.REVIEW_OVERDUE, f"risk review still open past its expected release ({expected})")
        late_by_s = (now - deadline).total_seconds()
        return [Flagged(deadline, late_by_s, FlagCause.CREDIT_MISSING, late_by_s), change, overdue]
    if state.phase is Phase.AWAITING_CREDIT and due:
        assert deadline is not None
        return _flag(state, deadline, now, policy)
    if state.phase is Phase.RETRYING and state.next_action_at is not None and state.next_action_at <= now:
        if state.attempts < policy.retry_attempts:
            state.attempts += 1
            state.next_action_at = now + policy.backoff(state.attempts)
            return [command(state, Command(CommandKind.RETRY_CREDIT, state.attempts), now)]
        state.phase = Phase.BLOCKING
        block = await_answer(state, Command(CommandKind.BLOCK_CREDIT, reason=RETRIES_EXHAUSTED), now, policy)
        change = status_change(state, OrderStatus.REMEDIATING, "could not credit; preparing a refund", now)
        return [Remediated(CommandKind.RETRY_CREDIT, Outcome.FAILED), block, change]
    if _awaits_answer(state) and wake_time(state, policy) is not None and _answer_due(state, policy) <= now:
        return _unanswered(state, now, policy)
    if (
        state.credited
        and not state.paid
        and state.anomaly is None
        and state.credited_at is not None
        and state.credited_at + policy.threshold(state.channel, state.product) <= safe_time
    ):
        state.anomaly = "credit_without_payment"
        note(state, "anomaly:credit_without_payment", now)
        why = "its payment failed" if state.phase is Phase.PAYMENT_FAILED else "no payment seen"
        opened = case(CaseKind.CREDIT_WITHOUT_PAYMENT, f"credited with no successful payment: {why}")
        return [Anomaly("credit_without_payment"), opened]
    return []


def _flag(state: OrderState, deadline: datetime, now: datetime, policy: Policy) -> list[Effect]:
    """Not credited by its deadline: flag it (unless its review was flagged already), tell the user, retry."""
    first = state.flagged_at is None
    state.phase, state.attempts, state.next_action_at = Phase.RETRYING, 1, now + policy.backoff(1)
    if first:
        state.flagged_at = now
    flag = _flagged(state, deadline, now)
    # The timeline says why, for on-call reading it: a late payment's flag is not the credit path's.
    note(state, "flagged_overdue:payment_late" if flag.cause is FlagCause.PAYMENT_LATE else "flagged_overdue", now)
    effects: list[Effect] = [flag] if first else []
    if state.status is not OrderStatus.DELAYED:
        eta = now + policy.remaining_retry_time(1)
        effects.append(status_change(state, OrderStatus.DELAYED, "not credited in time; retrying", now, eta))
    effects.append(command(state, Command(CommandKind.RETRY_CREDIT, 1), now))
    return effects


def _flagged(state: OrderState, deadline: datetime, now: datetime) -> Flagged:
    """The flag of an order not credited by its deadline, with why: its payment reached the reconciler only after
    the deadline (`payment_late`: the credit path never had a chance), or it was there in time (`credit_missing`).
    A payment_late order's detection is timed from the payment's arrival, when the detector could first flag it."""
    arrived = state.payment_arrived_at
    if arrived is not None and arrived > deadline:
        return Flagged(
            deadline, (now - deadline).total_seconds(), FlagCause.PAYMENT_LATE, (now - arrived).total_seconds()
        )
    late_by_s = (now - deadline).total_seconds()
    return Flagged(deadline, late_by_s, FlagCause.CREDIT_MISSING, late_by_s)


def _awaits_answer(state: OrderState) -> bool:
    """Whether the order waits for the answer to its BlockCredit or IssueRefund (AWAITING_ANSWER)."""
    phase = state.phase
    return phase is Phase.BLOCKING or phase is Phase.REFUNDING


def _answer_due(state: OrderState, policy: Policy) -> datetime:
    """When the order, waiting for the answer to its BlockCredit or IssueRefund, sends it again. A state stored before
    the wait was kept has none: it counts from its last change."""
    if state.next_action_at is not None:
        return state.next_action_at
    return max(at for _, at in state.history) + policy.answer_wait(0)


def _unanswered(state: OrderState, now: datetime, policy: Policy) -> list[Effect]:
    """No answer came within the wait: send the same command again (under an event id of its own: the ledger or
    payments answers it with the outcome it has if the first one was applied, and applies it if not), or, after the
    last re-send, hand the order to a person. It keeps its phase, so an answer that comes late still moves it on."""
    kind = AWAITING_ANSWER[state.phase]
    if state.resends < policy.answer_resends:
        state.resends += 1
        state.next_action_at = now + policy.answer_wait(state.resends)
        note(state, f"resent:{kind.value}#{state.resends}", now)
        return [Command(kind, reason=state.sent_reason or _reason_of(state), resent=state.resends)]
    state.next_action_at = None
    note(state, f"no_answer:{kind.value}", now)
    why = f"no answer to {kind.value}, sent {state.resends + 1} times"
    return [
        status_change(state, OrderStatus.NEEDS_SUPPORT, why, now),
        Escalated(kind, EscalationReason.NO_ANSWER),
        case(CaseKind.NEEDS_SUPPORT, why),
    ]


def _reason_of(state: OrderState) -> str:
    """The reason of a command sent before its state kept it (`sent_reason`), as it was sent: a review's rejection
    blocks with a reason that says a refund follows (the ledger keeps that block against a re-drive)."""
    if state.phase is Phase.REFUNDING:
        return clip(_noted(state, "credit_rejected:final:") or state.rejected_early)  # empty: "not credited"
    rejection = _noted(state, "review_rejected:")
    if state.review == "rejected" and rejection is not None:
        return clip(f"{REVIEW_REJECTED_BLOCK}{rejection}")
    return RETRIES_EXHAUSTED


def _noted(state: OrderState, prefix: str) -> str | None:
    """What the order's latest history note starting with `prefix` says after it, if the history still has one."""
    found = next((what for what, _ in reversed(state.history) if what.startswith(prefix)), None)
    return None if found is None else found.removeprefix(prefix)
