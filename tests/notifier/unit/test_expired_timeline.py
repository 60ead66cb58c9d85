"""The status page of an order closed unpaid at its payment expiry says it expired, that nothing was charged and
that a new order is the way to top up, in the user's language."""

# ruff: noqa: RUF001 - Chinese text uses full-width punctuation on purpose

from datetime import UTC, datetime, timedelta

import pytest

from contracts.events import OrderStatus, OrderStatusChanged
from notifier import domain
from tests.notifier.unit.test_money_time_and_traditional_chinese import SIMPLIFIED_ONLY

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def expiry(amount: int = 64800, currency: str = "CNY") -> domain.Expiry:
    return domain.Expiry("ord_42", "u1", amount, currency, T0 + timedelta(minutes=30))


def paid(status: OrderStatus, sequence: int) -> OrderStatusChanged:
    return OrderStatusChanged(
        order_id="ord_42",
        user_id="u1",
        status=status,
        sequence=sequence,
        amount=64800,
        currency="CNY",
        channel="alipay",
        paid_at=T0 + timedelta(minutes=31),
        changed_at=T0 + timedelta(minutes=31 + sequence),
    )


@pytest.mark.parametrize(
    ("locale", "headline", "label", "money", "charged", "next_step"),
    [
        ("en", "Top-up order expired", "Expired unpaid", "CN¥648.00", "nothing was charged", "place a new order"),
        ("zh-CN", "充值订单已过期", "未付款，已过期", "¥648.00", "未扣任何款项", "请重新下单"),
        ("zh-TW", "儲值訂單已逾期", "未付款，已逾期", "CN¥648.00", "不會扣任何款項", "如需儲值，請重新下單"),
        ("zh-HK", "充值訂單已過期", "未付款，已過期", "CN¥648.00", "並無扣取任何款項", "如需充值，請重新落單"),
    ],
)
def test_an_expired_order_ends_unpaid_on_its_page_with_what_to_do_in_every_language(
    locale: str, headline: str, label: str, money: str, charged: str, next_step: str
) -> None:
    t = domain.timeline("ord_42", [expiry()], locale, "Asia/Taipei")
    assert (t.locale, t.headline, t.amount, t.final, t.sequence) == (locale, headline, money, True, 1)
    assert [(s.key, s.state, s.tone) for s in t.steps] == [
        ("submitted", domain.StepState.DONE, "ok"),
        ("expired", domain.StepState.DONE, "warn"),
    ]
    step = t.steps[-1]
    assert (step.label, step.at) == (label, T0 + timedelta(minutes=30))
    assert money in step.detail and charged in step.detail
    assert t.message.startswith(step.detail) and t.message.endswith(next_step + ("." if locale == "en" else "。"))


@pytest.mark.parametrize("locale", ["zh-TW", "zh-HK"])
def test_an_expired_orders_page_in_traditional_chinese_holds_no_simplified_character(locale: str) -> None:
    t = domain.timeline("ord_42", [expiry(30000, "TWD")], locale)
    words = t.headline + t.message + "".join(s.label + s.detail for s in t.steps)
    assert not SIMPLIFIED_ONLY & set(words)


def test_an_expired_order_shows_no_payment_and_nothing_still_to_come() -> None:
    keys = [s.key for s in domain.timeline("ord_42", [expiry()], "en").steps]
    assert "paid" not in keys and "crediting" not in keys and "credited" not in keys


def test_a_payment_known_for_an_expired_order_shows_the_paid_order_instead() -> None:
    t = domain.timeline("ord_42", [expiry(), paid(OrderStatus.DELAYED, 2)], "en")
    assert [s.key for s in t.steps] == ["submitted", "paid", "delayed", "crediting", "credited"]
    assert t.headline == "Your top-up is delayed" and not t.final


def test_an_expired_orders_time_is_written_in_the_users_zone_else_in_utc_labelled() -> None:
    assert domain.timeline("ord_42", [expiry()], "zh-TW", "Asia/Taipei").steps[-1].at_text == "2026年11月22日 下午4:30"
    assert domain.timeline("ord_42", [expiry()], "en").steps[-1].at_text == "Nov 22, 2026, 8:30\u202fAM UTC"
