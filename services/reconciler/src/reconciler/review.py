"""Risk review holds on one order: held, released or rejected. Pure: no I/O. Rules in domain.py's docstring."""

from dataclasses import replace
from datetime import datetime

from contracts.events import OrderHeld, OrderReleased, OrderReviewRejected, OrderStatus
from reconciler.domain import (
    Command,
    CommandKind,
    OrderState,
    Phase,
    Policy,
    Result,
    clip,
    close_credited,
    command,
    note,
    status_change,
)


def on_order_held(state: OrderState, event: OrderHeld, now: datetime, policy: Policy) -> Result:
    """The user paid and the order is held for review: the deadline moves to the expected release plus the
    threshold, and the user is told the expected time."""
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
        held_until=event.expected_release_at,
        deadline=event.expected_release_at + policy.threshold(event.channel, event.product),
        phase=Phase.HELD,
        review="held",
    )
    state = note(state, f"held:{event.reason}", event.held_at)
    if state.credited:  # the credit (read first from the other topic) proves the review released it
        return close_credited(state, now, policy)
    return status_change(state, OrderStatus.UNDER_REVIEW, "held for risk review", now, event.expected_release_at)


def on_order_released(state: OrderState, event: OrderReleased, now: datetime, policy: Policy) -> Result:
    """The review passed: the order waits for its credit until the release plus the threshold."""
    if state.phase is not Phase.HELD:
        return state, []
    state = replace(
        state,
        phase=Phase.AWAITING_CREDIT,
        review="released",
        deadline=event.released_at + policy.threshold(state.channel, state.product),
    )
    return note(state, "released", event.released_at), []


def on_review_rejected(state: OrderState, event: OrderReviewRejected, now: datetime, policy: Policy) -> Result:
    """The review rejected the order: block its credit, then refund once the ledger confirms the block."""
    if state.phase is not Phase.HELD:
        return state, []
    state = replace(state, phase=Phase.BLOCKING, review="rejected", next_action_at=None)
    state = note(state, f"review_rejected:{event.reason}", event.rejected_at)
    reason = clip(f"risk review rejected: {event.reason}")
    return command(state, Command(CommandKind.BLOCK_CREDIT, reason=reason), now)
