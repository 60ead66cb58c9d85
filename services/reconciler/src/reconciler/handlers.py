"""Reconciler use cases: apply an event to its order, let time pass for a partition, drop settled orders.

They run in rounds (adapters/rounds.py): every record of a batch, or every timer of a tick, is applied here,
its announcements queued and its new state staged; then the adapter sends the queued announcements
together, waits once for the broker to acknowledge them all, and only then writes the staged states. So a
crash in between repeats an announcement, which downstream drops by its deterministic id, instead of
losing it; and an announcement the broker refused leaves the state it stands for unwritten, to be tried
again.
"""

import logging
from datetime import datetime

from contracts.base import Message
from contracts.events import OrderStatus
from reconciler.domain import (
    Anomaly,
    CaseOpened,
    Command,
    Effect,
    Escalated,
    Flagged,
    OrderState,
    Outcome,
    Remediated,
    StatusChange,
)
from reconciler.engine import Engine
from reconciler.ports import Announcer, Observations
from servicekit.logs import about

log = logging.getLogger(__name__)

EXPIRED_PER_ROUND = 1_000
"""Orders dropped per partition per round at most. A worker taking over a table of many orders settled long
ago (a million, after a long stop) drops them over many rounds, each a bounded batch of tombstones, instead
of one round that holds the loop for minutes while faust's consumer thread misses its heartbeats."""


def _announce(state: OrderState, effects: list[Effect], announcer: Announcer, observe: Observations) -> None:
    for effect in effects:
        if isinstance(effect, StatusChange):
            announcer.status(state, effect)
            if effect.status is OrderStatus.CREDITED and state.paid_at and state.credited_at:
                observe.credited(state.channel, (state.credited_at - state.paid_at).total_seconds())
            log.debug(
                "order %s is %s: %s", state.order_id, effect.status.value, effect.reason, extra=about(state.order_id)
            )
        elif isinstance(effect, Command):
            announcer.command(state, effect)
            observe.remediation(effect.kind.value, (Outcome.RESENT if effect.resent else Outcome.REQUESTED).value)
            log.warning(
                "order %s: sending %s attempt %d%s",
                state.order_id,
                effect.kind.value,
                effect.attempt,
                f" again ({effect.resent}), no answer yet" if effect.resent else "",
                extra=about(state.order_id),
            )
        elif isinstance(effect, Flagged):
            observe.flagged(state.channel, effect.cause.value, effect.detection_s)
            log.warning(
                "order %s overdue (%s): deadline %s, flagged %.3fs after it",
                state.order_id,
                effect.cause.value,
                effect.deadline.isoformat(),
                effect.late_by_s,
                extra=about(state.order_id),
            )
        elif isinstance(effect, Anomaly):
            observe.anomaly(effect.kind)
            log.error("order %s anomaly: %s", state.order_id, effect.kind, extra=about(state.order_id))
        elif isinstance(effect, Remediated):
            observe.remediation(effect.action.value, effect.outcome.value)
        elif isinstance(effect, Escalated):
            observe.remediation(effect.action.value, Outcome.ESCALATED.value)
            observe.escalation(effect.reason.value)
            log.error(
                "order %s escalated to a person: %s", state.order_id, effect.reason.value, extra=about(state.order_id)
            )
        elif isinstance(effect, CaseOpened):
            announcer.case(state, effect)
            log.warning(
                "order %s: asking for a %s support case (%s): %s",
                state.order_id,
                effect.kind.value,
                effect.severity.value,
                effect.reason,
                extra=about(state.order_id),
            )


def handle_event(
    message: Message,
    event_type: str,
    partition: int,
    now: datetime,
    *,
    engine: Engine,
    announcer: Announcer,
    observe: Observations,
    arrived_at: datetime | None = None,
) -> None:
    """Join one payment, hold, credit, rejection or refund event into its order. `arrived_at`: when its record
    reached its topic (Engine.apply)."""
    observe.event(event_type)
    before = engine.states.get(message.order_id)
    result = engine.apply(message, partition, now, arrived_at)
    if result is None:
        return
    state, effects = result
    if state.paid and not (before and before.paid):  # a PaymentSucceeded, or an OrderHeld standing in for it
        observe.paid(state.channel)
    _announce(state, effects, announcer, observe)
    engine.commit(state)


def handle_tick(
    partition: int,
    now: datetime,
    safe_time: datetime | None,
    *,
    engine: Engine,
    announcer: Announcer,
    observe: Observations,
) -> list[str]:
    """Fire every timer of `partition` that is due; return the settled orders whose retention ended (the
    caller drops them from the table)."""
    for state, effects in engine.due(partition, now, safe_time):
        _announce(state, effects, announcer, observe)
        engine.commit(state)
    return [] if safe_time is None else engine.expired(partition, safe_time, limit=EXPIRED_PER_ROUND)
