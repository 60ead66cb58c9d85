"""Reconciler use cases: apply one payment or credit event to the order's state and announce what changed."""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from contracts.base import Message
from contracts.codec import Envelope
from contracts.events import CreditPosted, PaymentFailed, PaymentSucceeded
from reconciler import domain
from reconciler.domain import Effect, OrderState
from reconciler.ports import OrderStates, StatusPublisher

log = logging.getLogger(__name__)

Transition = Callable[[OrderState | None, Any], tuple[OrderState, list[Effect]]]

ROUTES: dict[type[Message], Transition] = {
    PaymentSucceeded: domain.on_payment_succeeded,
    PaymentFailed: domain.on_payment_failed,
    CreditPosted: domain.on_credit_posted,
}


async def handle_event(
    message: Message, envelope: Envelope, *, states: OrderStates, publisher: StatusPublisher
) -> None:
    """Join the event into the order's state. Status changes are published before the state is saved,
    so a crash in between repeats the announcement (deduplicated downstream) instead of losing it."""
    transition = ROUTES.get(type(message))
    if transition is None:
        return
    before = states.get(message.order_id)
    after, effects = transition(before, message)
    for effect in effects:
        await publisher.publish(after, effect)
        log.info("order %s is %s (event %s)", message.order_id, effect.status, envelope.event_id)
    if after != before:
        states.put(after)


Handler = Callable[[Message, Envelope], Awaitable[None]]
