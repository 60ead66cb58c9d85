"""The join of payments, credits and refunds on one order: the transitions for those events. Pure: no I/O.
Rules in domain.py's docstring; each transition changes the state it is given and returns the effects."""

from datetime import datetime

from contracts.events import (
    CaseKind,
    CreditPosted,
    CreditRejected,
    OrderStatus,
    PaymentFailed,
    PaymentSucceeded,
    RefundFailed,
    RefundSucceeded,
)
from reconciler.domain import (
    Anomaly,
    Command,
    CommandKind,
    Effect,
    Escalated,
    EscalationReason,
    OrderState,
    Outcome,
    Phase,
    Policy,
    Remediated,
    await_answer,
    case,
    clip,
    close_credited,
    note,
    settle,
    status_change,
)


def start_refund(state: OrderState, reason: str, now: datetime, policy: Policy) -> list[Effect]:
    state.phase = Phase.REFUNDING
    effects: list[Effect] = [await_answer(state, Command(CommandKind.ISSUE_REFUND, reason=clip(reason)), now, policy)]
    if state.status is not OrderStatus.REMEDIATING and state.review != "rejected":
        effects.append(status_change(state, OrderStatus.REMEDIATING, f"refunding: {reason}", now))
    return effects


def on_payment_succeeded(state: OrderState, event: PaymentSucceeded, now: datetime, policy: Policy) -> list[Effect]:
    """The provider confirmed the payment: the order is owed a credit by its deadline."""
    if state.paid:
        if not state.provider_txn_id:  # a held order's payment, released: its retries now carry the payment fact
            state.provider_txn_id = event.provider_txn_id
            note(state, "payment_fact", event.paid_at)
        return []
    state.provider_txn_id = event.provider_txn_id
    state.user_id, state.amount, state.currency = event.user_id, event.amount, event.currency
    state.channel, state.product, state.paid_at = event.channel, event.product, event.paid_at
    state.deadline = event.paid_at + policy.threshold(event.channel, event.product)
    if state.phase in (Phase.OPEN, Phase.PAYMENT_FAILED):
        state.phase, state.settled_at = Phase.AWAITING_CREDIT, None
    note(state, "paid", event.paid_at)
    if state.credited:
        return close_credited(state, now, policy)
    if state.rejected_early:
        return start_refund(state, state.rejected_early, now, policy)
    return []


def on_payment_failed(state: OrderState, event: PaymentFailed, now: datetime, policy: Policy) -> list[Effect]:
    """The payment failed: nothing is owed (a success, earlier or later, wins)."""
    if state.paid or state.phase is Phase.PAYMENT_FAILED:
        return []
    state.user_id, state.channel = event.user_id, event.channel
    if state.credited:  # a credit without a payment stays an open question (timers.py), never settled
        state.phase = Phase.PAYMENT_FAILED
    else:
        settle(state, Phase.PAYMENT_FAILED, event.failed_at)
    note(state, "payment_failed", event.failed_at)
    return []


def on_credit_posted(state: OrderState, event: CreditPosted, now: datetime, policy: Policy) -> list[Effect]:
    """The ledger credited the wallet. An order a person owns after its refund failed (ESCALATED) and that support
    then re-drove closes credited like any late credit: nothing was refunded, so nothing is refunded now."""
    if state.credited:
        return []
    state.credited_at = event.credited_at
    note(state, "credited", event.credited_at)
    if not state.user_id:
        state.user_id, state.amount, state.currency = event.user_id, event.amount, event.currency
    if not state.paid:
        state.settled_at = None  # a failed payment's order, credited after all: kept for timers.py to judge
        return []
    if state.phase in (Phase.REFUNDING, Phase.REFUNDED):
        state.phase, state.anomaly, state.settled_at = Phase.ESCALATED, "credited_after_refund", None
        state.next_action_at = None
        change = status_change(state, OrderStatus.NEEDS_SUPPORT, "credited while a refund was under way", now)
        escalated = Escalated(CommandKind.ISSUE_REFUND, EscalationReason.CREDITED_AFTER_REFUND)
        opened = case(CaseKind.NEEDS_SUPPORT, "credited while a refund was under way")
        return [Anomaly("credited_after_refund"), change, escalated, opened]
    retried = state.phase is Phase.RETRYING
    effects = close_credited(state, now, policy)
    if retried:
        effects.append(Remediated(CommandKind.RETRY_CREDIT, Outcome.SUCCEEDED))
    return effects


def on_credit_rejected(state: OrderState, event: CreditRejected, now: datetime, policy: Policy) -> list[Effect]:
    """The ledger refused the credit. A final refusal means the order can never be credited: refund."""
    note(state, f"credit_rejected:{'final' if event.final else 'retryable'}:{event.reason}", event.rejected_at)
    if not event.final or state.credited:
        return []
    if not state.paid or state.phase is Phase.HELD:
        # Read before the payment, or before the release of a held order, that it answers (the two come on
        # different topics): the payment (on_payment_succeeded) or the release (review.on_order_released) refunds.
        state.rejected_early = clip(event.reason)
        return []
    if state.phase not in (Phase.AWAITING_CREDIT, Phase.RETRYING, Phase.BLOCKING):
        return []
    retried = state.phase is Phase.RETRYING
    effects = start_refund(state, event.reason, now, policy)
    if retried:
        effects.append(Remediated(CommandKind.RETRY_CREDIT, Outcome.FAILED))
    return effects


def on_refund_succeeded(state: OrderState, event: RefundSucceeded, now: datetime, policy: Policy) -> list[Effect]:
    if state.phase is not Phase.REFUNDING:
        return []
    settle(state, Phase.REFUNDED, event.refunded_at)
    note(state, "refunded", event.refunded_at)
    change = status_change(state, OrderStatus.REFUNDED, "refunded to the original payment method", now)
    return [change, Remediated(CommandKind.ISSUE_REFUND, Outcome.SUCCEEDED)]


def on_refund_failed(state: OrderState, event: RefundFailed, now: datetime, policy: Policy) -> list[Effect]:
    if state.phase is not Phase.REFUNDING:
        return []
    state.phase, state.next_action_at = Phase.ESCALATED, None
    note(state, f"refund_failed:{event.reason}", event.failed_at)
    return [
        status_change(state, OrderStatus.NEEDS_SUPPORT, f"refund failed: {event.reason}", now),
        Remediated(CommandKind.ISSUE_REFUND, Outcome.FAILED),
        Escalated(CommandKind.ISSUE_REFUND, EscalationReason.REFUND_FAILED),
        case(CaseKind.NEEDS_SUPPORT, f"refund failed: {event.reason}"),
    ]
