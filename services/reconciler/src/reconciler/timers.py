"""What time does to one order: deadlines judged against the safe time, retries against the wall clock,
and the end of a settled order's retention. Pure: no I/O. Rules in domain.py's docstring."""

from datetime import datetime

from contracts.events import CaseKind, OrderStatus
from reconciler.domain import (
    SETTLED,
    Anomaly,
    Command,
    CommandKind,
    Effect,
    Flagged,
    OrderState,
    Outcome,
    Phase,
    Policy,
    Remediated,
    case,
    command,
    note,
    status_change,
)

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
        return [Flagged(deadline, (now - deadline).total_seconds()), change, overdue]
    if state.phase is Phase.AWAITING_CREDIT and due:
        assert deadline is not None
        return _flag(state, deadline, now, policy)
    if state.phase is Phase.RETRYING and state.next_action_at is not None and state.next_action_at <= now:
        if state.attempts < policy.retry_attempts:
            state.attempts += 1
            state.next_action_at = now + policy.backoff(state.attempts)
            return [command(state, Command(CommandKind.RETRY_CREDIT, state.attempts), now)]
        state.phase, state.next_action_at = Phase.BLOCKING, None
        block = command(state, Command(CommandKind.BLOCK_CREDIT, reason="credit retries exhausted"), now)
        change = status_change(state, OrderStatus.REMEDIATING, "could not credit; preparing a refund", now)
        return [Remediated(CommandKind.RETRY_CREDIT, Outcome.FAILED), block, change]
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
    note(state, "flagged_overdue", now)
    effects: list[Effect] = [Flagged(deadline, (now - deadline).total_seconds())] if first else []
    if state.status is not OrderStatus.DELAYED:
        eta = now + policy.remaining_retry_time(1)
        effects.append(status_change(state, OrderStatus.DELAYED, "not credited in time; retrying", now, eta))
    effects.append(command(state, Command(CommandKind.RETRY_CREDIT, 1), now))
    return effects
