"""Reconciler use cases: apply an event to its order, and let time pass for a partition.

Effects are announced before the new state is stored, and the adapter makes a stored state durable only
once the broker has acknowledged its announcements (adapters/batch.py), so a crash in between repeats an
announcement, which downstream drops by its deterministic id, instead of losing it.
"""

import logging
from datetime import UTC, datetime

from contracts.base import Message
from contracts.codec import Envelope
from contracts.events import OrderStatus
from reconciler.domain import Anomaly, Command, Effect, Flagged, OrderState, StatusChange
from reconciler.engine import Engine
from reconciler.ports import Announcer, Clock, Observations

log = logging.getLogger(__name__)


async def _announce(state: OrderState, effects: list[Effect], announcer: Announcer, observe: Observations) -> None:
    for effect in effects:
        if isinstance(effect, StatusChange):
            await announcer.status(state, effect)
            if effect.status is OrderStatus.CREDITED and state.paid_at and state.credited_at:
                observe.credited(state.channel, (state.credited_at - state.paid_at).total_seconds())
            log.info("order %s is %s: %s", state.order_id, effect.status.value, effect.reason)
        elif isinstance(effect, Command):
            await announcer.command(state, effect)
            observe.remediation(effect.kind.value, "requested")
            log.warning("order %s: sent %s attempt %d", state.order_id, effect.kind.value, effect.attempt)
        elif isinstance(effect, Flagged):
            observe.flagged(state.channel, effect.late_by_s)
            log.warning(
                "order %s overdue: deadline %s, flagged %.3fs after it",
                state.order_id,
                effect.deadline.isoformat(),
                effect.late_by_s,
            )
        elif isinstance(effect, Anomaly):
            observe.anomaly(effect.kind)
            log.error("order %s anomaly: %s", state.order_id, effect.kind)


async def handle_event(
    message: Message,
    envelope: Envelope,
    partition: int,
    *,
    engine: Engine,
    announcer: Announcer,
    observe: Observations,
    clock: Clock,
) -> None:
    """Join one payment, hold, credit, rejection or refund event into its order."""
    now = datetime.fromtimestamp(clock.now(), UTC)
    before = engine.states.get(message.order_id)
    result = engine.apply(message, partition, now)
    observe.event(envelope.event_type)
    if result is None:
        return
    state, effects = result
    if state.paid and not (before and before.paid):  # a PaymentSucceeded, or an OrderHeld that stands in for it
        observe.paid(state.channel)
    await _announce(state, effects, announcer, observe)
    if state != before:
        engine.commit(state)


async def handle_tick(
    partition: int,
    safe_time: datetime | None,
    *,
    engine: Engine,
    announcer: Announcer,
    observe: Observations,
    clock: Clock,
) -> int:
    """Fire every timer of `partition` that is due; return how many orders moved."""
    now = datetime.fromtimestamp(clock.now(), UTC)
    moved = 0
    for state, effects in engine.due(partition, now, safe_time):
        await _announce(state, effects, announcer, observe)
        engine.commit(state)
        moved += 1
    return moved
