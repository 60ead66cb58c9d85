"""What the user is told about each status change, in their language, money and time zone. Pure: no I/O."""

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from contracts.codec import deterministic_id
from contracts.events import OrderExpired, OrderStatus, OrderStatusChanged
from notifier.domain.locales import format_money, format_time, resolve_locale
from notifier.domain.wording import BODIES, ETA, ORDER_REF, TITLES


class Urgency(StrEnum):
    """RFC 8030 Urgency: how soon the push service should wake the device."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


_URGENCY = {
    OrderStatus.CREDITED: Urgency.HIGH,
    OrderStatus.REFUNDED: Urgency.HIGH,
    OrderStatus.NEEDS_SUPPORT: Urgency.HIGH,
}


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one user about one status of one order."""

    notification_id: str
    order_id: str
    user_id: str
    status: OrderStatus
    locale: str
    title: str
    body: str
    collapse_key: str
    push_topic: str
    urgency: Urgency
    sequence: int
    changed_at: datetime


def notification_id(order_id: str, status: OrderStatus) -> str:
    return deterministic_id("notification", order_id, status.value)


def push_topic(order_id: str) -> str:
    """The RFC 8030 Topic for an order's pushes (at most 32 URL-safe base64 characters): a push service
    holding an undelivered message with the same topic replaces it, so "delayed" gives way to "credited"."""
    return base64.urlsafe_b64encode(hashlib.sha256(order_id.encode()).digest()[:24]).decode()


def urgency_for(status: OrderStatus) -> Urgency:
    """The news the user is waiting for wakes the device; the rest can wait for its next wake-up."""
    return _URGENCY.get(status, Urgency.NORMAL)


def title(status: OrderStatus, locale: str | None) -> str:
    """The short headline for a status."""
    return TITLES[resolve_locale(locale)][status]


def describe(
    change: OrderStatusChanged, locale: str | None, time_zone: str | None = None, *, labelled: bool = False
) -> str:
    """What happened, the amount and, when known, the estimated time; without the order reference.
    `locale` is the user's own (en-GB, zh-TW): the text is in its supported language, numbers and dates
    follow it. `labelled`: `time_zone` is not the user's choice, the time names it (`format_time`)."""
    lang = resolve_locale(locale)
    eta = ""
    if change.estimated_credit_at is not None:
        when = format_time(change.estimated_credit_at, locale, time_zone, labelled=labelled)
        eta = ETA[lang].format(time=when)
    money = format_money(change.amount, change.currency, locale)
    return BODIES[lang][change.status].format(money=money, eta=eta)


def render(change: OrderStatusChanged, locale: str | None = None, time_zone: str | None = None) -> Notification:
    """The message for a status change, in the user's language, money format and time zone; the collapse
    key is the order id so a newer status replaces an older one."""
    return _notification(
        change.order_id,
        change.user_id,
        change.status,
        describe(change, locale, time_zone),
        locale,
        sequence=change.sequence,
        changed_at=change.changed_at,
    )


def describe_expired(amount: int, currency: str, locale: str | None) -> str:
    """What happened to an order closed unpaid (nothing was charged) and its amount; without the order reference."""
    return BODIES[resolve_locale(locale)][OrderStatus.EXPIRED].format(money=format_money(amount, currency, locale))


EXPIRED_SEQUENCE = 1
"""An expired order was never paid, so the reconciler never numbered a status of it: its one status is the first."""


def render_expired(expired: OrderExpired, locale: str | None = None) -> Notification:
    """The message for an order closed unpaid at its payment expiry: nothing was charged. Same collapse key and
    push topic as the order's other messages."""
    return _notification(
        expired.order_id,
        expired.user_id,
        OrderStatus.EXPIRED,
        describe_expired(expired.amount, expired.currency, locale),
        locale,
        sequence=EXPIRED_SEQUENCE,
        changed_at=expired.expired_at,
    )


def _notification(
    order_id: str,
    user_id: str,
    status: OrderStatus,
    body: str,
    locale: str | None,
    *,
    sequence: int,
    changed_at: datetime,
) -> Notification:
    lang = resolve_locale(locale)
    return Notification(
        notification_id=notification_id(order_id, status),
        order_id=order_id,
        user_id=user_id,
        status=status,
        locale=lang,
        title=TITLES[lang][status],
        body=body + ORDER_REF[lang].format(order_id=order_id),
        collapse_key=order_id,
        push_topic=push_topic(order_id),
        urgency=urgency_for(status),
        sequence=sequence,
        changed_at=changed_at,
    )
