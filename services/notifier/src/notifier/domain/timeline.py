"""An order's timeline as the user sees it on the status page, built from its status changes. Pure: no I/O.

The happy path is submitted, paid, crediting, credited. Whatever else happened (under review, delayed,
remediating, compensated, refunded, needs support) appears where it happened, with its time and message.
"""

# ruff: noqa: RUF001 - Chinese text uses full-width punctuation on purpose

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from contracts.events import OrderStatus, OrderStatusChanged
from notifier.domain.messages import describe, format_money, resolve_locale, title


class StepState(StrEnum):
    DONE = "done"
    CURRENT = "current"
    UPCOMING = "upcoming"


@dataclass(frozen=True, slots=True)
class Step:
    """One line of the timeline; `tone` is "ok" or "warn" (something went slower than it should)."""

    key: str
    label: str
    state: StepState
    at: datetime | None = None
    detail: str = ""
    tone: str = "ok"


@dataclass(frozen=True, slots=True)
class Timeline:
    """What the status page shows for one order; `sequence` is the newest status change it includes."""

    order_id: str
    locale: str
    headline: str
    message: str
    amount: str
    sequence: int
    final: bool
    steps: tuple[Step, ...]


_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "submitted": "Order submitted",
        "paid": "Payment received",
        "crediting": "Crediting",
        "credited": "Credited",
        OrderStatus.UNDER_REVIEW: "Under review",
        OrderStatus.DELAYED: "Delayed",
        OrderStatus.REMEDIATING: "Fixing the credit",
        OrderStatus.COMPENSATED: "Compensation added",
        OrderStatus.REFUNDED: "Refunded",
        OrderStatus.NEEDS_SUPPORT: "With our support team",
    },
    "zh-CN": {
        "submitted": "订单已提交",
        "paid": "已付款",
        "crediting": "充值中",
        "credited": "已到账",
        OrderStatus.UNDER_REVIEW: "审核中",
        OrderStatus.DELAYED: "到账延迟",
        OrderStatus.REMEDIATING: "正在处理",
        OrderStatus.COMPENSATED: "已补偿",
        OrderStatus.REFUNDED: "已退款",
        OrderStatus.NEEDS_SUPPORT: "客服处理中",
    },
}

_PAGE_TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Your top-up",
        "order": "Order",
        "amount": "Amount",
        "live": "Live",
        "reconnecting": "Reconnecting…",
        "waiting": "Waiting for news about this order",
        "waiting_detail": "This page updates by itself as soon as anything happens.",
        "quote": "Quote this order number to support.",
        "eta": "Expected by {time} UTC",
    },
    "zh-CN": {
        "title": "您的充值",
        "order": "订单号",
        "amount": "金额",
        "live": "实时",
        "reconnecting": "正在重新连接…",
        "waiting": "正在等待该订单的最新进展",
        "waiting_detail": "一有进展，本页会自动更新。",
        "quote": "联系客服时请提供此订单号。",
        "eta": "预计 {time}（UTC）前到账",
    },
}

_WARN = frozenset({OrderStatus.UNDER_REVIEW, OrderStatus.DELAYED, OrderStatus.REMEDIATING, OrderStatus.NEEDS_SUPPORT})
_FINAL = frozenset({OrderStatus.CREDITED, OrderStatus.REFUNDED})


def page_text(locale: str | None) -> dict[str, str]:
    """The status page's own words (headings, the live indicator) in the user's language."""
    return dict(_PAGE_TEXT[resolve_locale(locale)])


def timeline(order_id: str, changes: Sequence[OrderStatusChanged], locale: str | None) -> Timeline:
    """The order's timeline from every status change known for it, in any order, in the user's language."""
    lang = resolve_locale(locale)
    labels = _LABELS[lang]
    ordered = sorted(changes, key=lambda c: (c.sequence, c.changed_at))
    if not ordered:
        text = _PAGE_TEXT[lang]
        steps = (
            Step("submitted", labels["submitted"], StepState.DONE),
            Step("paid", labels["paid"], StepState.UPCOMING),
            Step("crediting", labels["crediting"], StepState.UPCOMING),
            Step("credited", labels["credited"], StepState.UPCOMING),
        )
        return Timeline(order_id, lang, text["waiting"], text["waiting_detail"], "", 0, False, steps)
    first, latest = ordered[0], ordered[-1]
    money = format_money(first.amount, first.currency)
    built = [
        Step("submitted", labels["submitted"], StepState.DONE),
        Step("paid", labels["paid"], StepState.DONE, first.paid_at, money),
    ]
    final = False
    for change in ordered:
        built.extend(_steps_for(change, lang, labels))
        final = final or change.status in _FINAL
    if not final:
        eta = latest.estimated_credit_at
        detail = _PAGE_TEXT[lang]["eta"].format(time=eta.strftime("%Y-%m-%d %H:%M")) if eta else ""
        built.append(Step("crediting", labels["crediting"], StepState.CURRENT, None, detail))
        built.append(Step("credited", labels["credited"], StepState.UPCOMING))
    return Timeline(
        order_id=order_id,
        locale=lang,
        headline=title(latest.status, lang),
        message=describe(latest, lang),
        amount=money,
        sequence=latest.sequence,
        final=final,
        steps=tuple(built),
    )


def _steps_for(change: OrderStatusChanged, lang: str, labels: dict[str, str]) -> list[Step]:
    if change.status is OrderStatus.PAID:
        return []  # the paid step is always there, from paid_at
    detail = describe(change, lang)
    if change.status is OrderStatus.CREDITED:
        return [
            Step("crediting", labels["crediting"], StepState.DONE),
            Step("credited", labels["credited"], StepState.DONE, change.credited_at or change.changed_at, detail),
        ]
    tone = "warn" if change.status in _WARN else "ok"
    return [Step(change.status.value, labels[change.status], StepState.DONE, change.changed_at, detail, tone)]
