"""A rightly signed notification whose time is malformed (a year-1 date) must get the provider's documented
failure answer (422 `fail` / FAIL), not an unhandled exception (a 5xx)."""

import time
from urllib.parse import parse_qsl

import pytest

from credited.providers import wechatpay as local_wechatpay
from credited.providers.book import Book
from credited.providers.faults import Faults
from credited.providers.keys import LocalKeys
from payments.adapters.providers.registry import ProviderRegistry
from payments.callbacks import Callback, handle_callbacks
from payments.domain import Payers
from tests.payments.providers.conftest import alipay, wechatpay
from tests.payments.providers.test_alipay_callbacks import notification as alipay_notification
from tests.payments.providers.test_alipay_callbacks import resign
from tests.payments.providers.test_wechatpay_callbacks import ORDER, sealed
from tests.payments.unit.fakes import FixedClock, InMemoryPayments, Store

PAYERS = Payers({"alipay": "alipay", "wechat": "wechatpay"})


def alipay_body(keys: LocalKeys, **change: str) -> bytes:
    params = dict(parse_qsl(alipay_notification(keys).body.decode()))
    return resign(keys, {**params, **change})


def wechat_body(keys: LocalKeys, success_time: str) -> tuple[bytes, dict[str, str]]:
    book = Book()
    book.open(local_wechatpay.PROVIDER, local_wechatpay.trade_no_for(ORDER), 600)
    paid = book.pay(local_wechatpay.PROVIDER, local_wechatpay.trade_no_for(ORDER))
    transaction = local_wechatpay.WeChatPayServer(keys, book, Faults()).transaction(paid)
    transaction["success_time"] = success_time
    return sealed(keys, "TRANSACTION.SUCCESS", "transaction", transaction)


@pytest.mark.parametrize("case", ["alipay gmt_payment", "alipay notify_time 08:00 China", "wechatpay success_time"])
async def test_a_signed_notification_with_a_year_one_time_gets_a_declared_refusal(
    case: str,
    local_keys: LocalKeys,
) -> None:
    if case == "alipay gmt_payment":
        provider, body, headers = "alipay", alipay_body(local_keys, gmt_payment="0001-01-01 00:00:00"), {}
    elif case == "alipay notify_time 08:00 China":
        provider, body, headers = "alipay", alipay_body(local_keys, notify_time="0001-01-01 07:59:59"), {}
    else:
        provider = "wechatpay"
        body, headers = wechat_body(local_keys, "0001-01-01T00:00:00+08:00")
    registry = ProviderRegistry([alipay(local_keys), wechatpay(local_keys)])
    store = Store()
    try:
        (result,) = await handle_callbacks(
            [Callback(provider, body, None, headers)],
            secrets={},
            uow=lambda: InMemoryPayments(store),
            clock=FixedClock(time.time()),
            payers=PAYERS,
            providers=registry,
        )
    except Exception as exc:  # noqa: BLE001 - what the HTTP route turns into a 500
        pytest.fail(f"{case}: {type(exc).__name__}: {exc} escaped handle_callbacks (a 5xx, not the provider's fail)")
    assert 400 <= result.status_code < 500 and result.reply is not None
