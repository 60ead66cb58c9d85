"""Notifier use cases: turn a status change, or an order expired unpaid, into one notification for the user."""

import logging
from collections.abc import Collection, Sequence
from typing import Any

from contracts.base import Message
from contracts.codec import Envelope
from contracts.events import OrderExpired, OrderStatus, OrderStatusChanged
from notifier import domain
from notifier.ports import SUPERSEDED, NotifierUnitOfWork, UnitOfWorkFactory

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


def expired_payload(notification: domain.Notification, expired: OrderExpired) -> dict[str, Any]:
    """What every channel sends about an order closed unpaid: the same fields as for a status change, with no
    payment behind it (`paid_at` null)."""
    return {
        "notification_id": notification.notification_id,
        "order_id": expired.order_id,
        "user_id": expired.user_id,
        "status": notification.status.value,
        "previous_status": None,
        "reason": "",
        "title": notification.title,
        "body": notification.body,
        "locale": notification.locale,
        "collapse_key": notification.collapse_key,
        "push_topic": notification.push_topic,
        "urgency": notification.urgency.value,
        "sequence": notification.sequence,
        "amount": expired.amount,
        "currency": expired.currency,
        "channel": expired.channel,
        "paid_at": None,
        "credited_at": None,
        "estimated_credit_at": None,
        "changed_at": expired.expired_at.isoformat(),
    }


async def lock_orders(order_ids: Collection[str], *, uow: UnitOfWorkFactory) -> None:
    """Lock these orders as queueing their notifications does, in the consumer's transaction: before a poll that
    failed is handled one message at a time in it (servicekit.kafka.only), whose messages then find their orders
    locked already."""
    async with uow() as tx:
        await tx.lock_orders(order_ids)


async def handle_status_changes(deliveries: Sequence[tuple[Message, Envelope]], *, uow: UnitOfWorkFactory) -> None:
    """Queue one notification per (order, status) for a consumed batch of status changes, each in its user's
    language and time zone, in one unit of work; a redelivered change (in the batch or from before) adds nothing."""
    wanted = [(m, e) for m, e in deliveries if isinstance(m, OrderStatusChanged)]
    if not wanted:
        return
    async with uow() as tx:
        preferences = await tx.preferences_of_many(sorted({m.user_id for m, _ in wanted}))
        rendered = []
        for message, envelope in wanted:
            chosen = preferences.get(message.user_id, domain.Preferences())
            notification = domain.render(message, chosen.locale, chosen.time_zone)
            rendered.append((notification, payload(notification, message), message, envelope))
        await _queue(tx, rendered)


async def handle_expired_orders(deliveries: Sequence[tuple[Message, Envelope]], *, uow: UnitOfWorkFactory) -> None:
    """Queue one notification per order that payments closed unpaid at its payment expiry, in its user's
    language; a redelivered OrderExpired adds nothing."""
    wanted = [(m, e) for m, e in deliveries if isinstance(m, OrderExpired)]
    if not wanted:
        return
    async with uow() as tx:
        preferences = await tx.preferences_of_many(sorted({m.user_id for m, _ in wanted}))
        rendered = []
        for message, envelope in wanted:
            notification = domain.render_expired(message, preferences.get(message.user_id, domain.Preferences()).locale)
            rendered.append((notification, expired_payload(notification, message), message, envelope))
        await _queue(tx, rendered)


_Rendered = tuple[domain.Notification, dict[str, Any], OrderStatusChanged | OrderExpired, Envelope]


async def _queue(tx: NotifierUnitOfWork, rendered: Sequence[_Rendered]) -> None:
    """Add the batch's notifications, each once: one repeated in the batch or queued before adds nothing, and one
    older than a status of its order queued before is recorded but never sent (the user is never told an order
    went back)."""
    unique: dict[str, _Rendered] = {}
    for item in rendered:
        if item[0].notification_id in unique:
            _repeated(item[2], item[3])
        else:
            unique[item[0].notification_id] = item
    added = await tx.add_many([(n, body) for n, body, _, _ in unique.values()])
    for notification_id, (_, _, message, envelope) in unique.items():
        if notification_id not in added:
            _repeated(message, envelope)
        elif added[notification_id] == SUPERSEDED:
            _superseded(message, envelope)


def _superseded(message: OrderStatusChanged | OrderExpired, envelope: Envelope) -> None:
    status = message.status if isinstance(message, OrderStatusChanged) else OrderStatus.EXPIRED
    log.info(
        "notification %s for order %s arrived after a newer status of the order: recorded, not sent (event %s)",
        status,
        message.order_id,
        envelope.event_id,
    )


def _repeated(message: OrderStatusChanged | OrderExpired, envelope: Envelope) -> None:
    status = message.status if isinstance(message, OrderStatusChanged) else OrderStatus.EXPIRED
    log.info("notification %s for order %s already queued (event %s)", status, message.order_id, envelope.event_id)
