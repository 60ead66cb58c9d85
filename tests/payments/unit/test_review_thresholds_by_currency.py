"""The risk review's first top-up threshold per currency: minor units differ by currency (CNY counts fen, JPY and KRW
whole yen and won), so one number of minor units reviews far too many first top-ups in one currency and far too few
in another. Each currency named gets its own threshold; the single number still holds for every other."""

import json
from datetime import UTC, datetime

import pytest

from payments.callbacks import handle_callback
from payments.config import Settings
from payments.domain import Order, PaymentStatus, ReviewRule
from payments.handlers import PlaceOrder, handle_place_order
from servicekit.settings import read_settings
from servicekit.signatures import sign
from tests.payments.unit.fakes import DEVELOPMENT_PAYERS, FixedClock, InMemoryOrderBook, InMemoryPayments, Store

NOW = datetime(2026, 11, 22, 8, 30, tzinfo=UTC)
VARIABLES = ("PAYMENTS_REVIEW_FIRST_TOPUP_ABOVE_MINOR", "PAYMENTS_REVIEW_FIRST_TOPUP_ABOVE")


def paid(amount: int, currency: str) -> Order:
    return Order(
        order_id=f"ord_{currency}_{amount}",
        user_id="u1",
        amount=amount,
        currency=currency,
        channel="card",
        payment_status=PaymentStatus.SUCCEEDED,
        status="paid",
        created_at=NOW,
    )


def held(rule: ReviewRule, amount: int, currency: str) -> bool:
    return rule.hold(paid(amount, currency), True, NOW).review_status == "held"


def test_a_krw_and_a_cny_first_topup_are_each_held_above_their_own_currencys_threshold() -> None:
    rule = ReviewRule(expected_s=900, above_minor_by_currency={"CNY": 50_000, "KRW": 1_000_000})
    assert not held(rule, 60_000, "KRW")  # about 300 CNY
    assert held(rule, 1_000_001, "KRW")
    assert held(rule, 50_001, "CNY")
    assert not held(rule, 50_000, "CNY")
    assert rule.hold(paid(50_001, "CNY"), True, NOW).review_reason == "first top-up above 50000 CNY minor units"


def test_a_currency_not_named_is_held_above_the_single_number_and_with_none_never() -> None:
    with_default = ReviewRule(expected_s=900, above_minor_by_currency={"KRW": 1_000_000}, above_minor_otherwise=50_000)
    assert held(with_default, 50_001, "JPY") and not held(with_default, 50_000, "JPY")
    assert not held(with_default, 60_000, "KRW")
    named_only = ReviewRule(expected_s=900, above_minor_by_currency={"KRW": 1_000_000})
    assert not held(named_only, 10**12, "JPY")
    assert named_only.threshold("JPY") is None


def test_a_repeat_top_up_is_never_held_whatever_its_currency() -> None:
    rule = ReviewRule(expected_s=900, above_minor_by_currency={"CNY": 50_000})
    assert rule.hold(paid(10**9, "CNY"), False, NOW).review_status is None


def test_the_lowest_threshold_of_any_currency_bounds_which_orders_can_be_held() -> None:
    rule = ReviewRule(
        expected_s=900, above_minor_by_currency={"JPY": 10_000, "KRW": 1_000_000}, above_minor_otherwise=50_000
    )
    assert rule.first_topup_above_minor == 10_000


@pytest.mark.parametrize(("by_currency", "otherwise"), [({}, None), ({"CNY": 0}, None), ({}, 0), ({"CNY": 50_000}, -1)])
def test_a_rule_without_a_positive_threshold_is_refused(by_currency: dict[str, int], otherwise: int | None) -> None:
    with pytest.raises(ValueError, match="threshold"):
        ReviewRule(expected_s=900, above_minor_by_currency=by_currency, above_minor_otherwise=otherwise)


async def test_a_repeat_top_up_above_a_lower_currency_threshold_is_not_held_in_a_group_of_its_own() -> None:
    """The callback group asks which users already cleared a top-up only for orders the rule could hold; a JPY
    threshold below the single number must still count, or a user's second JPY top-up is held as a first."""
    rule = ReviewRule(expected_s=900, above_minor_by_currency={"JPY": 10_000}, above_minor_otherwise=50_000)
    store = Store()
    first = await pay_in(store, 5_000, "JPY", rule)
    second = await pay_in(store, 20_000, "JPY", rule)
    assert store.orders[first].review_status is None
    assert store.orders[second].review_status is None
    newcomer = await pay_in(store, 20_000, "JPY", rule, user="u2")
    assert store.orders[newcomer].review_status == "held"


async def pay_in(store: Store, amount: int, currency: str, rule: ReviewRule, user: str = "u1") -> str:
    clock = FixedClock(NOW.timestamp())
    placed, _ = await handle_place_order(
        PlaceOrder(user, amount, currency, "card"), book=InMemoryOrderBook(store), clock=clock
    )
    body = json.dumps(
        {
            "order_id": placed.order_id,
            "provider_txn_id": f"tx-{placed.order_id}",
            "status": "succeeded",
            "amount": amount,
            "currency": currency,
            "paid_at": NOW.isoformat(),
        }
    ).encode()
    secrets = {"sim": ["sim-secret"]}
    signature = sign("sim-secret", body, int(NOW.timestamp()))
    result = await handle_callback(
        "sim",
        body,
        signature,
        secrets=secrets,
        payers=DEVELOPMENT_PAYERS,
        uow=lambda: InMemoryPayments(store),
        clock=clock,
        review=rule,
    )
    assert result.code == "applied", result
    return placed.order_id


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_per_currency_thresholds_are_read_as_a_json_object_beside_the_single_number(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("PAYMENTS_REVIEW_FIRST_TOPUP_ABOVE", '{"CNY": 50000, "JPY": 10000}')
    environment.setenv("PAYMENTS_REVIEW_FIRST_TOPUP_ABOVE_MINOR", "70000")
    rule = Settings().review_rule()
    assert rule is not None
    assert [rule.threshold(c) for c in ("CNY", "JPY", "KRW")] == [50_000, 10_000, 70_000]


def test_the_single_number_alone_still_holds_every_currency_as_before(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("PAYMENTS_REVIEW_FIRST_TOPUP_ABOVE_MINOR", "50000")
    rule = Settings().review_rule()
    assert rule is not None
    assert [rule.threshold(c) for c in ("CNY", "JPY", "KRW")] == [50_000] * 3
    assert Settings(review_first_topup_above_minor=None).review_rule() is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('{"ABC": 50000}', "'ABC' is not an ISO 4217 currency"),
        ('{"cny": 50000}', "'cny' is not an ISO 4217 currency"),
        ('{"XXX": 50000}', "XXX has no minor unit"),
        ('{"CNY": 0}', "PAYMENTS_REVIEW_FIRST_TOPUP_ABOVE[CNY]"),
        ('{"CNY": 500.5}', "PAYMENTS_REVIEW_FIRST_TOPUP_ABOVE[CNY]"),
    ],
)
def test_payments_refuses_to_start_on_a_threshold_for_no_iso_4217_currency_or_no_positive_amount(
    value: str, problem: str, environment: pytest.MonkeyPatch
) -> None:
    environment.setenv("PAYMENTS_REVIEW_FIRST_TOPUP_ABOVE", value)
    with pytest.raises(SystemExit) as stopped:
        read_settings(Settings, "payments")
    message = str(stopped.value.code)
    assert message.startswith("payments cannot start") and "PAYMENTS_REVIEW_FIRST_TOPUP_ABOVE" in message, message
    assert problem in message, message
