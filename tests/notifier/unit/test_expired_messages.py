"""An order closed unpaid at its payment expiry is told to its user once, in their language."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import pytest

from contracts.codec import envelope_for
from contracts.events import OrderExpired, OrderStatus
from notifier import domain, handlers

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def expired(order_id: str = "ord_42", amount: int = 64800, currency: str = "CNY") -> OrderExpired:
    return OrderExpired(
        order_id=order_id,
        user_id="u1",
        amount=amount,
        currency=currency,
        channel="wechat",
        provider="wechatpay",
        placed_at=T0,
        expired_at=T0 + timedelta(minutes=30),
    )


@pytest.mark.parametrize(
    ("locale", "title", "amount"),
    [
        ("en", "Top-up order expired", "CN¥648.00"),
        ("zh-CN", "充值订单已过期", "¥648.00"),
        ("zh-TW", "儲值訂單已逾期", "CN¥648.00"),
        ("zh-HK", "充值訂單已過期", "CN¥648.00"),
    ],
)
def test_an_expired_order_is_told_in_every_language_with_its_amount_and_order_id(
    locale: str, title: str, amount: str
) -> None:
    n = domain.render_expired(expired(), locale)
    assert (n.status, n.locale, n.title) == (OrderStatus.EXPIRED, locale, title)
    assert amount in n.body and n.body.endswith("ord_42")
    assert n.collapse_key == "ord_42" and n.push_topic == domain.push_topic("ord_42")
    assert n.notification_id == domain.notification_id("ord_42", OrderStatus.EXPIRED)


def test_an_expired_yen_order_shows_its_amount_without_decimals() -> None:
    assert "¥648" in domain.render_expired(expired(amount=648, currency="JPY"), "en").body


class FakeUnitOfWork:
    """Keeps queued notifications across units of work, as the notifications table does."""

    def __init__(self, queued: dict[str, dict[str, Any]], preferences: dict[str, domain.Preferences]) -> None:
        self.queued, self.preferences = queued, preferences

    async def __aenter__(self) -> "FakeUnitOfWork":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def preferences_of_many(self, user_ids: Sequence[str]) -> dict[str, domain.Preferences]:
        return {u: self.preferences[u] for u in user_ids if u in self.preferences}

    async def add_many(self, notifications: Sequence[tuple[domain.Notification, dict[str, Any]]]) -> dict[str, str]:
        added = {n.notification_id: "pending" for n, _ in notifications if n.notification_id not in self.queued}
        for n, payload in notifications:
            self.queued.setdefault(n.notification_id, payload)
        return added


async def test_a_redelivered_expiry_queues_one_notification_in_the_users_chosen_language() -> None:
    queued: dict[str, dict[str, Any]] = {}
    prefs = {"u1": domain.Preferences(locale="zh-HK")}
    message = expired()
    delivery = (message, envelope_for(message, producer="payments"))
    for _ in range(2):  # twice in one batch, then once more in another
        await handlers.handle_expired_orders([delivery, delivery], uow=lambda: FakeUnitOfWork(queued, prefs))
    (payload,) = queued.values()
    assert (payload["order_id"], payload["status"], payload["locale"]) == ("ord_42", "expired", "zh-HK")
    assert payload["paid_at"] is None and payload["changed_at"] == message.expired_at.isoformat()
    assert payload["title"] == "充值訂單已過期"
