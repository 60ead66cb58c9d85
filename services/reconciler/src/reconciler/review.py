"""Risk review holds on one order: held, released or rejected. Pure: no I/O. Rules in domain.py's docstring;
each transition changes the state it is given and returns the effects."""

from datetime import datetime

from contracts.commands import REVIEW_REJECTED_BLOCK
from contracts.events import OrderHeld, OrderReleased, OrderReviewRejected, OrderStatus
from reconciler.domain import (
    Command,
    CommandKind,
    Effect,
    OrderState,
    Phase,
    Policy,
    await_answer,
    clip,
    close_credited,
    note,
    status_change,
)
from reconciler.join import start_refund


def on_order_held(state: OrderState, event: OrderHeld, now: datetime, policy: Policy) -> list[Effect]:
    """The user paid and the order is held for review: the deadline moves to the expected release plus the
    threshold, and the user is told the expected time."""
    if state.paid:
        return []
    state.user_id, state.amount, state.currency = event.user_id, event.amount, event.currency
    state.channel, state.product, state.paid_at = event.channel, event.product, event.paid_at
    state.held_until = event.expected_release_at
    state.deadline = event.expected_release_at + policy.threshold(event.channel, event.product)
    state.phase, state.review, state.settled_at = Phase.HELD, "held", None
    note(state, f"held:{event.reason}", event.held_at)
    if state.credited:  # the credit (read first from the other topic) proves the review released it
        return close_credited(state, now, policy)
    return [status_change(state, OrderStatus.UNDER_REVIEW, "held for risk review", now, event.expected_release_at)]


def on_order_released(state: OrderState, event: OrderReleased, now: datetime, policy: Policy) -> list[Effect]:
    """The review passed: the order waits for its credit until the release plus the threshold."""
    if state.phase is not Phase.HELD:
        return []
    state.phase, state.review = Phase.AWAITING_CREDIT, "released"
    state.deadline = event.released_at + policy.threshold(state.channel, state.product)
    note(state, "released", event.released_at)
    if state.rejected_early:  # the ledger's final refusal of the released payment, read before the release
        return start_refund(state, state.rejected_early, now, policy)
    return []


def on_review_rejected(state: OrderState, event: OrderReviewRejected, now: datetime, policy: Policy) -> list[Effect]:
    """The review rejected the order: block its credit, then refund once the ledger confirms the block."""
    if state.phase is not Phase.HELD:
        return []
    state.phase, state.review = Phase.BLOCKING, "rejected"
    note(state, f"review_rejected:{event.reason}", event.rejected_at)
    reason = clip(f"{REVIEW_REJECTED_BLOCK}{event.reason}")
    return [await_answer(state, Command(CommandKind.BLOCK_CREDIT, reason=reason), now, policy)]
