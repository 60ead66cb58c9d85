"""An order's timeline as the user sees it on the status page, built from its status changes. Pure: no I/O.

The happy path is submitted, paid, crediting, credited. Whatever else happened (under review, delayed,
remediating, compensated, refunded, needs support) appears where it happened, with its time and message.
An order closed unpaid at its payment expiry ends at `expired`: submitted, then expired, nothing paid.

Every time on it (a step's, and the expected time in its sentences) is written here (`format_time`) in one zone:
the user's when they chose one; else the zone of the browser showing it, when the page says which (for display
only, labelled with its offset: a guess is never written as if the user had chosen it); else UTC, labelled. The page
shows them as written.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from contracts.events import OrderStatus, OrderStatusChanged
from notifier.domain.locales import format_money, format_time, resolve_locale
from notifier.domain.messages import EXPIRED_SEQUENCE, describe, describe_expired, title
from notifier.domain.wording import PAGE_TEXT, STEP_LABELS


class StepState(StrEnum):
    DONE = "done"
    CURRENT = "current"
    UPCOMING = "upcoming"


@dataclass(frozen=True, slots=True)
class Step:
    """One line of the timeline; `tone` is "ok" or "warn" (something went slower than it should); `at_text` is `at`
    as the user reads it (their language, their time zone or UTC labelled, as the times in `detail`)."""

    key: str
    label: str
    state: StepState
    at: datetime | None = None
    detail: str = ""
    tone: str = "ok"
    at_text: str = ""


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


@dataclass(frozen=True, slots=True)
class Expiry:
    """The order stayed unpaid until payments closed it at its payment expiry: no payment stands behind it, so
    it is no status change of a paid order (OrderStatusChanged needs a payment time)."""

    order_id: str
    user_id: str
    amount: int
    currency: str
    expired_at: datetime
    sequence: int = EXPIRED_SEQUENCE


_WARN = frozenset({OrderStatus.UNDER_REVIEW, OrderStatus.DELAYED, OrderStatus.REMEDIATING, OrderStatus.NEEDS_SUPPORT})
_FINAL = frozenset({OrderStatus.CREDITED, OrderStatus.REFUNDED})


def page_text(locale: str | None) -> dict[str, str]:
    """The status page's own words (headings, the live indicator) in the user's language."""
    return dict(PAGE_TEXT[resolve_locale(locale)])


def timeline(
    order_id: str,
    changes: Sequence[OrderStatusChanged | Expiry],
    locale: str | None,
    time_zone: str | None = None,
    *,
    browser_zone: str | None = None,
) -> Timeline:
    """The order's timeline from every status change (or its expiry) known for it, in any order, in the user's
    language, money format and time zone; without one, in `browser_zone` (the zone of the browser showing it),
    labelled; an unknown zone is UTC, labelled."""
    labelled = not time_zone
    time_zone = time_zone or browser_zone
    lang = resolve_locale(locale)
    labels = STEP_LABELS[lang]
    ordered = sorted(
        (c for c in changes if isinstance(c, OrderStatusChanged)), key=lambda c: (c.sequence, c.changed_at)
    )
    expiry = next((c for c in changes if isinstance(c, Expiry)), None)
    if not ordered and expiry is not None:  # a payment known for the order, however late, tells more
        return _expired(expiry, locale, time_zone, labelled, labels)
    if not ordered:
        text = PAGE_TEXT[lang]
        steps = (
            Step("submitted", labels["submitted"], StepState.DONE),
            Step("paid", labels["paid"], StepState.UPCOMING),
            Step("crediting", labels["crediting"], StepState.UPCOMING),
            Step("credited", labels["credited"], StepState.UPCOMING),
        )
        return Timeline(order_id, lang, text["waiting"], text["waiting_detail"], "", 0, False, steps)
    first, latest = ordered[0], ordered[-1]
    money = format_money(first.amount, first.currency, locale)
    built = [
        Step("submitted", labels["submitted"], StepState.DONE),
        Step("paid", labels["paid"], StepState.DONE, first.paid_at, money),
    ]
    final = False
    for change in ordered:
        built.extend(_steps_for(change, locale, time_zone, labelled, labels))
        final = final or change.status in _FINAL
    if not final:
        eta = latest.estimated_credit_at
        when = format_time(eta, locale, time_zone, labelled=labelled) if eta else ""
        detail = PAGE_TEXT[lang]["eta"].format(time=when) if eta else ""
        built.append(Step("crediting", labels["crediting"], StepState.CURRENT, None, detail))
        built.append(Step("credited", labels["credited"], StepState.UPCOMING))
    return Timeline(
        order_id=order_id,
        locale=lang,
        headline=title(latest.status, lang),
        message=describe(latest, locale, time_zone, labelled=labelled),
        amount=money,
        sequence=latest.sequence,
        final=final,
        steps=_timed(built, locale, time_zone, labelled),
    )


def _timed(steps: Sequence[Step], locale: str | None, time_zone: str | None, labelled: bool) -> tuple[Step, ...]:
    """The steps with their times written for the user, in the zone of every other time they are shown."""
    return tuple(
        replace(s, at_text=format_time(s.at, locale, time_zone, labelled=labelled)) if s.at else s for s in steps
    )


def _expired(
    expiry: Expiry, locale: str | None, time_zone: str | None, labelled: bool, labels: dict[str, str]
) -> Timeline:
    """An order that ended unpaid: what happened, that nothing was charged, and what to do (order again)."""
    lang = resolve_locale(locale)
    detail = describe_expired(expiry.amount, expiry.currency, locale)
    steps = (
        Step("submitted", labels["submitted"], StepState.DONE),
        Step(OrderStatus.EXPIRED.value, labels[OrderStatus.EXPIRED], StepState.DONE, expiry.expired_at, detail, "warn"),
    )
    return Timeline(
        order_id=expiry.order_id,
        locale=lang,
        headline=title(OrderStatus.EXPIRED, lang),
        message=detail + PAGE_TEXT[lang]["expired_next"],
        amount=format_money(expiry.amount, expiry.currency, locale),
        sequence=expiry.sequence,
        final=True,
        steps=_timed(steps, locale, time_zone, labelled),
    )


def _steps_for(
    change: OrderStatusChanged, locale: str | None, time_zone: str | None, labelled: bool, labels: dict[str, str]
) -> list[Step]:
    if change.status is OrderStatus.PAID:
        return []  # the paid step is always there, from paid_at
    detail = describe(change, locale, time_zone, labelled=labelled)
    if change.status is OrderStatus.CREDITED:
        return [
            Step("crediting", labels["crediting"], StepState.DONE),
            Step("credited", labels["credited"], StepState.DONE, change.credited_at or change.changed_at, detail),
        ]
    tone = "warn" if change.status in _WARN else "ok"
    return [Step(change.status.value, labels[change.status], StepState.DONE, change.changed_at, detail, tone)]
