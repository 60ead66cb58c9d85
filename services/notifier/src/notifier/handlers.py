"""Notifier use cases: turn a status change into one notification for the user."""

import logging
from collections.abc import Sequence
from typing import Any

from contracts.base import Message
from contracts.codec import Envelope
from contracts.events import OrderStatusChanged
from notifier import domain
from notifier.ports import UnitOfWorkFactory

log = logging.getLogger(__name__)


def payload(notification: domain.Notification, change: OrderStatusChanged) -> dict[str, Any]:
    """What every channel sends: the message and the facts behind it."""
    return {
        "notification_id": notification.notification_id,
        "order_id": change.order_id,
        "user_id": change.user_id,
        "status": change.status.value,
        "previous_status": change.previous_status.value if change.previous_status else None,
        "reason": change.reason,
        "title": notification.title,
        "body": notification.body,
        "locale": notification.locale,
        "collapse_key": notification.collapse_key,
        "push_topic": notification.push_topic,
        "urgency": notification.urgency.value,
        "sequence": change.sequence,
        "amount": change.amount,
        "currency": change.currency,
        "channel": change.channel,
        "paid_at": change.paid_at.isoformat(),
        "credited_at": change.credited_at.isoformat() if change.credited_at else None,
        "estimated_credit_at": change.estimated_credit_at.isoformat() if change.estimated_credit_at else None,
        "changed_at": change.changed_at.isoformat(),
    }


async def handle_status_changes(deliveries: Sequence[tuple[Message, Envelope]], *, uow: UnitOfWorkFactory) -> None:
    """Queue one notification per (order, status) for a consumed batch of status changes, each in its user's
    language and time zone, in one unit of work; a redelivered change (in the batch or from before) adds nothing."""
    wanted = [(m, e) for m, e in deliveries if isinstance(m, OrderStatusChanged)]
    if not wanted:
        return
    changes: dict[str, tuple[domain.Notification, OrderStatusChanged, Envelope]] = {}
    async with uow() as tx:
        preferences = await tx.preferences_of_many(sorted({m.user_id for m, _ in wanted}))
        for message, envelope in wanted:
            chosen = preferences.get(message.user_id, domain.Preferences())
            notification = domain.render(message, chosen.locale, chosen.time_zone)
            if notification.notification_id in changes:
                _repeated(message, envelope)
            else:
                changes[notification.notification_id] = (notification, message, envelope)
        added = await tx.add_many([(n, payload(n, m)) for n, m, _ in changes.values()])
    for notification_id, (_, message, envelope) in changes.items():
        if notification_id not in added:
            _repeated(message, envelope)


def _repeated(message: OrderStatusChanged, envelope: Envelope) -> None:
    log.info(
        "notification %s for order %s already queued (event %s)", message.status, message.order_id, envelope.event_id
    )
