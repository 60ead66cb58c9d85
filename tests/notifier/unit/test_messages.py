from datetime import UTC, datetime

import pytest

from contracts.events import OrderStatus, OrderStatusChanged
from notifier import domain

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def change(status: OrderStatus, eta: datetime | None = None) -> OrderStatusChanged:
    return OrderStatusChanged(
        order_id="ord_42",
        user_id="u1",
        status=status,
        sequence=1,
        amount=64800,
        currency="CNY",
        channel="alipay",
        paid_at=T0,
        changed_at=T0,
        estimated_credit_at=eta,
    )


@pytest.mark.parametrize("status", list(OrderStatus))
@pytest.mark.parametrize("locale", domain.LOCALES)
def test_every_status_has_a_message_with_amount_and_order_id_in_every_language(
    status: OrderStatus, locale: str
) -> None:
    n = domain.render(change(status), locale)
    assert n.title and "648.00" in n.body and "ord_42" in n.body
    assert n.collapse_key == "ord_42" and n.locale == locale


def test_a_delay_message_carries_the_estimated_time_labelled_utc_when_the_zone_is_unknown() -> None:
    eta = datetime(2026, 11, 22, 8, 5, tzinfo=UTC)
    assert "Expected by Nov 22, 2026, 8:05\u202fAM UTC." in domain.render(change(OrderStatus.DELAYED, eta), "en").body
    assert "预计2026年11月22日 08:05（UTC）前到账。" in domain.render(change(OrderStatus.DELAYED, eta), "zh-CN").body  # noqa: RUF001


@pytest.mark.parametrize(
    ("asked", "got"),
    [
        ("zh-TW", "zh-TW"),
        ("zh-HK", "zh-HK"),
        ("zh-MO", "zh-HK"),
        ("zh-Hant", "zh-TW"),
        ("zh-Hant-HK", "zh-HK"),
        ("zh", "zh-CN"),
        ("zh-SG", "zh-CN"),
        ("zh-Hans-TW", "zh-CN"),
        ("en-GB", "en"),
        ("fr", "en"),
        ("<script>", "en"),
        (None, "en"),
    ],
)
def test_locales_resolve_to_the_written_language_and_unsupported_ones_fall_back(asked: str | None, got: str) -> None:
    assert domain.resolve_locale(asked) == got


def test_one_notification_id_per_order_and_status() -> None:
    assert domain.notification_id("o", OrderStatus.CREDITED) == domain.notification_id("o", OrderStatus.CREDITED)
    assert domain.notification_id("o", OrderStatus.CREDITED) != domain.notification_id("o", OrderStatus.DELAYED)
