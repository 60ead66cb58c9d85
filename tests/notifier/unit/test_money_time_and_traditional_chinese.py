"""Money by the currency's real exponent, times in the user's zone, Traditional Chinese written for Taiwan and
Hong Kong: what the user reads in each notification."""

# ruff: noqa: RUF001 - Chinese text uses full-width punctuation on purpose

from datetime import UTC, datetime

import pytest

from contracts.base import exponent
from contracts.events import OrderStatus, OrderStatusChanged
from notifier import domain
from notifier.domain import format_money, render

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
ETA = datetime(2026, 11, 22, 8, 5, tzinfo=UTC)

# Characters of the zh-CN messages whose Traditional form differs: none may appear in zh-TW or zh-HK text.
SIMPLIFIED_ONLY = set("账钱订单号审为处补偿发迟预计时实进这会动请联络页连们额该刚启状态币")


def change(
    status: OrderStatus, amount: int = 64800, currency: str = "CNY", eta: datetime | None = None
) -> OrderStatusChanged:
    return OrderStatusChanged(
        order_id="ord_42",
        user_id="u1",
        status=status,
        sequence=1,
        amount=amount,
        currency=currency,
        channel="card",
        paid_at=T0,
        changed_at=T0,
        estimated_credit_at=eta,
    )


def test_a_jpy_amount_is_whole_yen_without_decimals() -> None:
    assert format_money(64800, "JPY", "en") == "¥64,800"
    assert format_money(64800, "JPY", "zh-CN") == "JP¥64,800"
    body = render(change(OrderStatus.CREDITED, 64800, "JPY"), "en").body
    assert body == "¥64,800 has been added to your wallet. Order: ord_42"


def test_a_krw_amount_is_whole_won_without_decimals() -> None:
    assert format_money(50000, "KRW", "en") == "₩50,000"
    assert "₩50,000" in render(change(OrderStatus.REFUNDED, 50000, "KRW"), "en").body


def test_a_cny_amount_has_two_decimals_and_the_symbol_of_the_users_locale() -> None:
    assert format_money(64800, "CNY", "zh-CN") == "¥648.00"
    assert format_money(64800, "CNY", "en") == "CN¥648.00"
    assert format_money(5, "CNY", "en") == "CN¥0.05"


def test_the_number_of_minor_digits_is_the_iso_4217_exponent() -> None:
    assert [exponent(c) for c in ("JPY", "KRW", "CNY", "USD", "BHD", "IQD")] == [0, 0, 2, 2, 3, 3]
    assert format_money(1234, "BHD", "en").endswith("1.234")


def test_numbers_follow_the_users_own_locale_within_the_written_language() -> None:
    assert format_money(123456789, "EUR", "en") == "€1,234,567.89"
    assert format_money(123456789, "EUR", "en-IN") == "€12,34,567.89"  # lakh grouping, still English text


def test_a_zh_tw_message_is_written_in_taiwans_traditional_chinese() -> None:
    credited = render(change(OrderStatus.CREDITED, 64800, "TWD"), "zh-TW")
    assert (credited.locale, credited.title) == ("zh-TW", "儲值已入帳")
    assert credited.body == "$648.00 已儲值到您的錢包。 訂單編號：ord_42"
    delayed = render(change(OrderStatus.DELAYED, 64800, "TWD", ETA), "zh-TW", "Asia/Taipei")
    assert delayed.body == (
        "您支付的 $648.00 安全無虞，只是入帳時間比平常久。預計於2026年11月22日 下午4:05前入帳。 訂單編號：ord_42"
    )


def test_a_zh_hk_message_is_written_in_hong_kongs_traditional_chinese() -> None:
    credited = render(change(OrderStatus.CREDITED, 64800, "HKD"), "zh-HK")
    assert (credited.locale, credited.title) == ("zh-HK", "充值已到賬")
    assert credited.body == "HK$648.00 已存入你的錢包。 訂單編號：ord_42"
    support = render(change(OrderStatus.NEEDS_SUPPORT, 64800, "HKD"), "zh-HK")
    assert support.title == "客戶服務團隊正在跟進你的充值"


@pytest.mark.parametrize("status", list(OrderStatus))
@pytest.mark.parametrize("locale", ["zh-TW", "zh-HK"])
def test_traditional_messages_hold_no_simplified_character_and_use_their_regions_words(
    status: OrderStatus, locale: str
) -> None:
    n = render(change(status, eta=ETA), locale, "Asia/Hong_Kong")
    page = "".join(domain.page_text(locale).values())
    assert not SIMPLIFIED_ONLY & set(n.title + n.body + page)
    if locale == "zh-TW":
        assert "你" not in n.body and "充值" not in n.title + n.body  # 您, and 儲值 for a top-up
    else:
        assert "您" not in n.body and "儲值" not in n.title + n.body  # 你, and 充值 for a top-up


def test_a_time_is_shown_in_the_users_time_zone_when_known() -> None:
    delayed = change(OrderStatus.DELAYED, eta=ETA)
    assert "Expected by Nov 22, 2026, 3:05\u202fAM." in render(delayed, "en", "America/New_York").body
    assert "预计2026年11月22日 16:05前到账。" in render(delayed, "zh-CN", "Asia/Shanghai").body
    assert "Expected by 22 Nov 2026, 08:05." in render(delayed, "en-GB", "Europe/London").body


def test_a_time_is_shown_in_utc_and_says_so_when_the_zone_is_unknown_or_not_a_zone() -> None:
    delayed = change(OrderStatus.DELAYED, eta=ETA)
    for zone in (None, "Mars/Olympus_Mons"):
        assert "Expected by Nov 22, 2026, 8:05\u202fAM UTC." in render(delayed, "en", zone).body
    assert not domain.valid_time_zone("Mars/Olympus_Mons") and domain.valid_time_zone("Asia/Taipei")
