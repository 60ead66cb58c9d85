"""Notifier use cases: turn a status change into one notification for the user."""

import logging
from typing import Any

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


async def handle_status_changed(message: OrderStatusChanged, envelope: Envelope, *, uow: UnitOfWorkFactory) -> None:
    """Queue one notification per (order, status), in the user's language and time zone; a redelivered change
    adds nothing."""
    async with uow() as tx:
        chosen = await tx.preferences_of(message.user_id)
        notification = domain.render(message, chosen.locale, chosen.time_zone)
        added = await tx.add(notification, payload(notification, message))
    if not added:
        log.info(
            "notification %s for order %s already queued (event %s)",
            message.status,
            message.order_id,
            envelope.event_id,
        )
