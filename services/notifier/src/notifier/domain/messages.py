"""What the user is told about each status change, in their language. Pure: no I/O."""

# ruff: noqa: RUF001 - Chinese text uses full-width punctuation on purpose

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from contracts.codec import deterministic_id
from contracts.events import OrderStatus, OrderStatusChanged

DEFAULT_LOCALE = "en"
LOCALES = ("en", "zh-CN")

_TITLES: dict[str, dict[OrderStatus, str]] = {
    "en": {
        OrderStatus.PAID: "Payment received",
        OrderStatus.CREDITED: "Top-up credited",
        OrderStatus.DELAYED: "Your top-up is delayed",
        OrderStatus.UNDER_REVIEW: "Your top-up is under review",
        OrderStatus.REMEDIATING: "We are fixing your top-up",
        OrderStatus.COMPENSATED: "Compensation added",
        OrderStatus.REFUNDED: "Top-up refunded",
        OrderStatus.NEEDS_SUPPORT: "Our support team is on your top-up",
    },
    "zh-CN": {
        OrderStatus.PAID: "已收到付款",
        OrderStatus.CREDITED: "充值已到账",
        OrderStatus.DELAYED: "充值到账延迟",
        OrderStatus.UNDER_REVIEW: "充值正在审核",
        OrderStatus.REMEDIATING: "正在为您处理充值",
        OrderStatus.COMPENSATED: "补偿已发放",
        OrderStatus.REFUNDED: "充值已退款",
        OrderStatus.NEEDS_SUPPORT: "客服正在处理您的充值",
    },
}

_BODIES: dict[str, dict[OrderStatus, str]] = {
    "en": {
        OrderStatus.PAID: "We received your payment of {money}. Crediting now.",
        OrderStatus.CREDITED: "{money} has been added to your wallet.",
        OrderStatus.DELAYED: "Your payment of {money} is safe; crediting is taking longer than usual.{eta}",
        OrderStatus.UNDER_REVIEW: "Your payment of {money} is under a routine review.{eta}",
        OrderStatus.REMEDIATING: "Your payment of {money} is safe; we are retrying the credit.{eta}",
        OrderStatus.COMPENSATED: "We added a compensation for the delay of your top-up of {money}.",
        OrderStatus.REFUNDED: "We could not credit {money}; it is being refunded to your original payment method.",
        OrderStatus.NEEDS_SUPPORT: "Your payment of {money} is safe; a person is handling it now.",
    },
    "zh-CN": {
        OrderStatus.PAID: "已收到您支付的 {money}，正在为您充值。",
        OrderStatus.CREDITED: "{money} 已充值到您的钱包。",
        OrderStatus.DELAYED: "您支付的 {money} 是安全的，到账比平时慢。{eta}",
        OrderStatus.UNDER_REVIEW: "您支付的 {money} 正在例行审核。{eta}",
        OrderStatus.REMEDIATING: "您支付的 {money} 是安全的，我们正在重新为您充值。{eta}",
        OrderStatus.COMPENSATED: "因充值延迟，我们已为您的 {money} 充值发放补偿。",
        OrderStatus.REFUNDED: "{money} 未能到账，正在原路退款。",
        OrderStatus.NEEDS_SUPPORT: "您支付的 {money} 是安全的，客服正在人工处理。",
    },
}

_ETA = {"en": " Expected by {time} UTC.", "zh-CN": "预计 {time}（UTC）前到账。"}
_ORDER_REF = {"en": " Order: {order_id}", "zh-CN": " 订单号：{order_id}"}


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


def resolve_locale(locale: str | None) -> str:
    """The best supported locale: exact, then by language (zh-TW -> zh-CN), then English."""
    if locale in _TITLES:
        return locale
    if locale and locale.split("-")[0].lower() == "zh":
        return "zh-CN"
    return DEFAULT_LOCALE


def format_money(amount: int, currency: str, exponent: int = 2) -> str:
    """`64800, "CNY"` as "648.00 CNY"."""
    units, minor = divmod(amount, 10**exponent)
    return f"{units}.{minor:0{exponent}d} {currency}" if exponent else f"{amount} {currency}"


def title(status: OrderStatus, locale: str | None) -> str:
    """The short headline for a status."""
    return _TITLES[resolve_locale(locale)][status]


def describe(change: OrderStatusChanged, locale: str | None) -> str:
    """What happened, the amount and, when known, the estimated time; without the order reference."""
    lang = resolve_locale(locale)
    eta = ""
    if change.estimated_credit_at is not None:
        eta = _ETA[lang].format(time=change.estimated_credit_at.strftime("%Y-%m-%d %H:%M"))
    return _BODIES[lang][change.status].format(money=format_money(change.amount, change.currency), eta=eta)


def render(change: OrderStatusChanged, locale: str | None = None) -> Notification:
    """The message for a status change; the collapse key is the order id so a newer status replaces an older one."""
    lang = resolve_locale(locale)
    body = describe(change, lang)
    return Notification(
        notification_id=notification_id(change.order_id, change.status),
        order_id=change.order_id,
        user_id=change.user_id,
        status=change.status,
        locale=lang,
        title=_TITLES[lang][change.status],
        body=body + _ORDER_REF[lang].format(order_id=change.order_id),
        collapse_key=change.order_id,
        push_topic=push_topic(change.order_id),
        urgency=urgency_for(change.status),
        sequence=change.sequence,
        changed_at=change.changed_at,
    )
