"""The WeChat Pay and Alipay adapters against the local provider over real HTTP on loopback: query,
refund, refund query and close, with injected failures and timeouts, and answers that must be signed."""

import pytest

from credited.providers import wechatpay as local_wechatpay
from credited.providers.book import TradeState
from credited.providers.faults import Fault, Operation
from credited.providers.keys import LocalKeys, private_pem
from credited.providers.server import LocalProvider
from payments.domain import CloseStatus, PaymentState, RefundRequest
from payments.ports import PaymentProvider
from tests.payments.providers.conftest import alipay, wechatpay

PROVIDERS = ["wechatpay", "alipay"]


def order(n: int) -> str:
    return f"ord_{n:032x}"


def trade_no(provider: str, order_id: str) -> str:
    return local_wechatpay.trade_no_for(order_id) if provider == "wechatpay" else order_id


def adapter(provider: str, keys: LocalKeys, server: LocalProvider, **changes: object) -> PaymentProvider:
    make = wechatpay if provider == "wechatpay" else alipay
    return make(keys, server.url, **changes)


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_query_says_what_the_provider_knows_and_a_paid_one_reads_as_its_callback(
    name: str, provider: LocalProvider, local_keys: LocalKeys
) -> None:
    ours, order_id = adapter(name, local_keys, provider), order(1)
    assert (await ours.query_payment(order_id)).state is PaymentState.NOT_FOUND
    provider.open(name, trade_no(name, order_id), 600)
    assert (await ours.query_payment(order_id)).state is PaymentState.PENDING
    delivery = provider.pay(name, trade_no(name, order_id), 600)
    paid = await ours.query_payment(order_id)
    assert (paid.state, paid.amount, paid.currency) == (PaymentState.PAID, 600, "CNY")
    note = delivery.notification
    callback = await ours.verify_callback(note.body, note.headers)
    assert paid.notice() == callback.notice  # a query that says paid is applied as its callback would be


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_trade_priced_in_another_currency_is_read_in_it_by_query_and_by_callback(
    name: str, provider: LocalProvider, local_keys: LocalKeys
) -> None:
    ours, order_id = adapter(name, local_keys, provider), order(1)
    delivery = provider.pay(name, trade_no(name, order_id), 600, "USD")
    paid = await ours.query_payment(order_id)
    assert (paid.state, paid.amount, paid.currency) == (PaymentState.PAID, 600, "USD")
    callback = await ours.verify_callback(delivery.notification.body, delivery.notification.headers)
    assert callback.notice is not None and (callback.notice.amount, callback.notice.currency) == (600, "USD")


@pytest.mark.parametrize("name", PROVIDERS)
async def test_close_ends_an_unpaid_order_and_not_a_paid_one(
    name: str, provider: LocalProvider, local_keys: LocalKeys
) -> None:
    ours = adapter(name, local_keys, provider)
    provider.open(name, trade_no(name, order(1)), 600)
    assert (await ours.close(order(1))).status is CloseStatus.CLOSED
    trade = provider.book.get(name, trade_no(name, order(1)))
    assert trade is not None and trade.state is TradeState.CLOSED
    assert (await ours.query_payment(order(1))).state is PaymentState.CLOSED
    assert (await ours.close(order(1))).status is CloseStatus.CLOSED  # again: still closed

    provider.pay(name, trade_no(name, order(2)), 600)
    assert (await ours.close(order(2))).status is CloseStatus.ALREADY_PAID
    assert (await ours.close(order(3))).status is CloseStatus.NOT_FOUND


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_refund_is_made_once_by_our_refund_id(
    name: str, provider: LocalProvider, local_keys: LocalKeys
) -> None:
    ours = adapter(name, local_keys, provider)
    provider.pay(name, trade_no(name, order(1)), 1234)
    paid = await ours.query_payment(order(1))
    assert paid.provider_txn_id is not None
    request = RefundRequest(order(1), "c5c7d4f1-refund-1", paid.provider_txn_id, 1234, 1234, "CNY", "not credited")
    assert (await ours.refund(request)).status == "succeeded"
    assert (await ours.refund(request)).status == "succeeded"  # the same refund id again
    trade = provider.book.get(name, trade_no(name, order(1)))
    assert trade is not None and list(trade.refunds) == ["c5c7d4f1-refund-1"] and trade.refunded == 1234
    assert (await ours.query_refund(order(1), "c5c7d4f1-refund-1")).status == "succeeded"
    missing = await ours.query_refund(order(1), "c5c7d4f1-refund-2")
    assert missing.status == "unknown" and "no such refund" in missing.reason


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_refund_above_what_was_paid_is_refused_by_the_provider(
    name: str, provider: LocalProvider, local_keys: LocalKeys
) -> None:
    ours = adapter(name, local_keys, provider)
    provider.pay(name, trade_no(name, order(1)), 600)
    txn = (await ours.query_payment(order(1))).provider_txn_id or ""
    # Our domain refuses it too; this asks the provider anyway, as a refund of another order's amount would.
    inflated = RefundRequest(order(1), "refund-x", txn, 700, 700, "CNY")
    answer = await ours.refund(inflated)
    assert answer.status == "failed", answer
    trade = provider.book.get(name, trade_no(name, order(1)))
    assert trade is not None and trade.refunded == 0


@pytest.mark.parametrize("name", PROVIDERS)
async def test_an_injected_failure_is_an_unknown_answer_that_changed_nothing(
    name: str, provider: LocalProvider, local_keys: LocalKeys
) -> None:
    ours = adapter(name, local_keys, provider)
    provider.pay(name, trade_no(name, order(1)), 600)
    provider.open(name, trade_no(name, order(2)), 600)
    txn = (await ours.query_payment(order(1))).provider_txn_id or ""
    for operation in Operation:
        provider.faults.script(operation, Fault.FAIL)
    request = RefundRequest(order(1), "refund-1", txn, 600, 600, "CNY")
    assert (await ours.query_payment(order(1))).state is PaymentState.UNKNOWN
    assert (await ours.refund(request)).status == "unknown"
    assert (await ours.query_refund(order(1), "refund-1")).status == "unknown"
    assert (await ours.close(order(2))).status is CloseStatus.UNKNOWN
    assert provider.faults.counts == {f"{op}:fail": 1 for op in Operation} | {"query:none": 1}
    assert provider.book.get(name, trade_no(name, order(1))).refunded == 0  # type: ignore[union-attr]
    assert provider.book.get(name, trade_no(name, order(2))).state is TradeState.WAITING  # type: ignore[union-attr]
    assert (await ours.refund(request)).status == "succeeded"  # asked again, it goes through
    assert (await ours.close(order(2))).status is CloseStatus.CLOSED


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_timeout_is_an_unknown_answer_and_a_query_then_finds_what_happened(
    name: str, provider: LocalProvider, local_keys: LocalKeys
) -> None:
    ours = adapter(name, local_keys, provider, provider_timeout_s=0.3)
    provider.pay(name, trade_no(name, order(1)), 600)
    provider.open(name, trade_no(name, order(2)), 600)
    txn = (await ours.query_payment(order(1))).provider_txn_id or ""
    provider.faults.script(Operation.REFUND, Fault.TIMEOUT)
    provider.faults.script(Operation.CLOSE, Fault.TIMEOUT)
    provider.faults.script(Operation.QUERY, Fault.TIMEOUT)
    timed_out = await ours.refund(RefundRequest(order(1), "refund-1", txn, 600, 600, "CNY"))
    assert timed_out.status == "unknown" and "no answer" in timed_out.reason
    assert (await ours.query_refund(order(1), "refund-1")).status == "succeeded"  # it happened all the same
    assert (await ours.close(order(2))).status is CloseStatus.UNKNOWN
    assert (await ours.query_payment(order(2))).state is PaymentState.UNKNOWN
    assert (await ours.query_payment(order(2))).state is PaymentState.CLOSED


@pytest.mark.parametrize("name", PROVIDERS)
async def test_an_answer_not_signed_by_the_provider_we_know_is_not_believed(
    name: str, provider: LocalProvider, local_keys: LocalKeys, other_keys: LocalKeys
) -> None:
    provider.pay(name, trade_no(name, order(1)), 600)
    theirs = other_keys.payments_env(provider.url)
    wrong_provider_key = {
        "wechatpay": {"wechatpay_platform_certificates": theirs["PAYMENTS_WECHATPAY_PLATFORM_CERTIFICATES"]},
        "alipay": {"alipay_public_key": theirs["PAYMENTS_ALIPAY_PUBLIC_KEY"]},
    }[name]
    unsure = await adapter(name, local_keys, provider, **wrong_provider_key).query_payment(order(1))
    assert unsure.state is PaymentState.UNKNOWN and "signature" in unsure.reason
    assert (await adapter(name, local_keys, provider).query_payment(order(1))).state is PaymentState.PAID


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_request_signed_with_another_merchant_key_is_refused_by_the_provider(
    name: str, provider: LocalProvider, local_keys: LocalKeys, other_keys: LocalKeys
) -> None:
    provider.open(name, trade_no(name, order(1)), 600)
    wrong_merchant_key = {
        "wechatpay": {"wechatpay_merchant_private_key": private_pem(other_keys.wechat_merchant_key)},
        "alipay": {"alipay_app_private_key": private_pem(other_keys.alipay_app_key)},
    }[name]
    ours = adapter(name, local_keys, provider, **wrong_merchant_key)
    refused = await ours.query_payment(order(1))
    assert refused.state is PaymentState.UNKNOWN
    assert ("SIGN_ERROR" if name == "wechatpay" else "isv.invalid-signature") in refused.reason
    assert (await ours.close(order(1))).status is CloseStatus.UNKNOWN
    trade = provider.book.get(name, trade_no(name, order(1)))
    assert trade is not None and trade.state is TradeState.WAITING
