"""Alipay notifications: what the local provider signs is accepted by our adapter and by the official
python-alipay-sdk; what was tampered with, signed with another key, stale, from the future or replayed
with another amount is refused. trade_status is read as paid, not paid or still waiting."""

import time
from urllib.parse import parse_qsl, urlencode

import pytest
from alipay import AliPay

from credited.providers import alipay as local
from credited.providers.book import Book, Trade
from credited.providers.faults import Faults
from credited.providers.keys import LocalKeys, bare, private_pem, public_pem, sign
from credited.providers.notifier import Notification
from payments.domain import (
    CallbackAck,
    CallbackRejected,
    Order,
    Outcome,
    Payers,
    PaymentStatus,
    VerifiedCallback,
    decide,
)
from tests.payments.providers.conftest import alipay

ORDER = "ord_" + "0123456789abcdef" * 2


def trade(keys: LocalKeys, amount: int = 1234, *, paid: bool = True) -> tuple[local.AlipayServer, Trade]:
    book = Book()
    server = local.AlipayServer(keys, book, Faults())
    opened = book.open(local.PROVIDER, ORDER, amount)
    return server, book.pay(local.PROVIDER, ORDER) if paid else opened


def notification(keys: LocalKeys, amount: int = 1234, notify_time: float | None = None) -> Notification:
    server, paid = trade(keys, amount)
    return server.notification(paid, notify_time)


def sdk_verifies(keys: LocalKeys, body: bytes) -> bool:
    """python-alipay-sdk's own check of a notification, as its README shows: sign popped, the rest verified."""
    sdk = AliPay(
        appid=keys.alipay_app_id,
        app_private_key_string=private_pem(keys.alipay_app_key),
        alipay_public_key_string=public_pem(keys.alipay_key.public_key()),
    )
    data = dict(parse_qsl(body.decode()))
    signature = data.pop("sign")
    return bool(sdk.verify(data, signature))


def resign(keys: LocalKeys, params: dict[str, str]) -> bytes:
    """`params` signed as Alipay signs a notification (with `keys`' Alipay key)."""
    unsigned = {k: v for k, v in params.items() if k not in ("sign", "sign_type")}
    signature = sign(keys.alipay_key, local.content(unsigned, frozenset()))
    return urlencode({**unsigned, "sign": signature, "sign_type": "RSA2"}).encode()


async def verified(keys: LocalKeys, body: bytes) -> VerifiedCallback:
    return await alipay(keys).verify_callback(body, {"content-type": "application/x-www-form-urlencoded"})


async def refused(keys: LocalKeys, body: bytes) -> CallbackRejected:
    with pytest.raises(CallbackRejected) as caught:
        await verified(keys, body)
    return caught.value


async def test_a_paid_notification_from_the_local_provider_is_accepted_and_the_sdk_agrees(
    local_keys: LocalKeys,
) -> None:
    note = notification(local_keys, amount=1234)
    callback = await verified(local_keys, note.body)
    notice = callback.notice
    assert callback.event == "TRADE_SUCCESS" and notice is not None and notice.succeeded
    assert (notice.order_id, notice.provider, notice.amount, notice.currency) == (ORDER, "alipay", 1234, "CNY")
    params = dict(parse_qsl(note.body.decode()))
    assert params["total_amount"] == "12.34" and notice.provider_txn_id == params["trade_no"]
    assert abs(notice.paid_at.timestamp() - time.time()) < 60  # gmt_payment read as China time
    assert sdk_verifies(local_keys, note.body)


TAMPERINGS = {
    "a changed subject": ("subject", "something else"),
    "a changed status": ("trade_status", "TRADE_FINISHED"),
    "a changed order": ("out_trade_no", "ord_" + "f" * 32),
    "a changed amount": ("total_amount", "0.01"),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
async def test_a_tampered_notification_is_refused_by_us_and_by_the_sdk(local_keys: LocalKeys, tampering: str) -> None:
    params = dict(parse_qsl(notification(local_keys).body.decode()))
    name, value = TAMPERINGS[tampering]
    assert params[name] != value
    body = urlencode({**params, name: value}).encode()
    assert (await refused(local_keys, body)).code == "signature_mismatch"
    assert not sdk_verifies(local_keys, body)


async def test_a_replay_with_another_amount_is_refused(local_keys: LocalKeys) -> None:
    note = notification(local_keys, amount=1234)
    assert (await verified(local_keys, note.body)).notice is not None  # the original, once
    params = dict(parse_qsl(note.body.decode()))
    replay = urlencode({**params, "total_amount": "123.40", "receipt_amount": "123.40"}).encode()
    rejection = await refused(local_keys, replay)
    assert (rejection.status_code, rejection.code) == (401, "signature_mismatch")
    assert not sdk_verifies(local_keys, replay)


async def test_a_notification_signed_with_another_key_is_refused(local_keys: LocalKeys, other_keys: LocalKeys) -> None:
    params = dict(parse_qsl(notification(local_keys).body.decode()))
    forged = resign(other_keys, params)
    assert (await refused(local_keys, forged)).code == "signature_mismatch"
    assert not sdk_verifies(local_keys, forged)
    assert (await verified(local_keys, resign(local_keys, params))).notice is not None  # the same, rightly signed


@pytest.mark.parametrize(("offset", "code"), [(-360, "signature_expired"), (360, "signature_from_future")])
async def test_a_stale_or_future_notify_time_is_refused(local_keys: LocalKeys, offset: int, code: str) -> None:
    note = notification(local_keys, notify_time=time.time() + offset)
    assert sdk_verifies(local_keys, note.body)  # rightly signed: only its time is wrong
    rejection = await refused(local_keys, note.body)
    assert (rejection.status_code, rejection.code) == (401, code)


async def test_a_notification_without_sign_or_with_another_sign_type_is_refused(local_keys: LocalKeys) -> None:
    params = dict(parse_qsl(notification(local_keys).body.decode()))
    no_sign = urlencode({k: v for k, v in params.items() if k != "sign"}).encode()
    assert (await refused(local_keys, no_sign)).code == "signature_missing"
    rsa1 = urlencode({**params, "sign_type": "RSA"}).encode()
    assert (await refused(local_keys, rsa1)).code == "signature_malformed"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"app_id": "2021000000000999"}, "foreign_merchant"),
        ({"seller_id": "2088000000000999"}, "foreign_merchant"),
        ({"total_amount": "12.345"}, "invalid_callback"),
        ({"total_amount": "-12.34"}, "invalid_callback"),
        ({"total_amount": "1.2e3"}, "invalid_callback"),
        ({"charset": "gbk"}, "invalid_callback"),
    ],
)
async def test_a_rightly_signed_notification_that_is_not_for_us_or_not_an_amount_is_refused(
    local_keys: LocalKeys, change: dict[str, str], code: str
) -> None:
    params = dict(parse_qsl(notification(local_keys).body.decode()))
    rejection = await refused(local_keys, resign(local_keys, {**params, **change}))
    assert (rejection.status_code, rejection.code) == (422, code)


async def test_a_payment_priced_in_another_trans_currency_is_read_in_it_and_never_pays_a_cny_order(
    local_keys: LocalKeys,
) -> None:
    # Alipay's total_amount is in trans_currency when a trade is priced in one (CNY when it is absent): 12.34 USD is
    # not 12.34 CNY, so the notice must say USD and the CNY order of 1234 fen refuse it.
    params = dict(parse_qsl(notification(local_keys, amount=1234).body.decode()))
    body = resign(local_keys, {**params, "trans_currency": "USD"})
    assert sdk_verifies(local_keys, body)
    notice = (await verified(local_keys, body)).notice
    assert notice is not None and (notice.amount, notice.currency) == (1234, "USD")
    placed = Order(ORDER, "u1", 1234, "CNY", "alipay", PaymentStatus.PENDING, "pending", notice.paid_at)
    decision = decide(placed, notice, Payers({"alipay": "alipay"}))
    assert (decision.outcome, decision.code) == (Outcome.REJECTED, "amount_mismatch")


async def test_a_parameter_sent_twice_is_refused(local_keys: LocalKeys) -> None:
    body = notification(local_keys).body + b"&total_amount=0.01"
    assert (await refused(local_keys, body)).code == "invalid_callback"


async def test_a_trade_closed_unpaid_and_a_waiting_one_carry_no_outcome(local_keys: LocalKeys) -> None:
    """Alipay closes an unpaid trade at its timeout or when our expiry closes it: no payment failed, so the notice
    applies nothing (the order's query reads the trade closed and expires the order)."""
    server, waiting = trade(local_keys, paid=False)
    pending = await verified(local_keys, server.notification(waiting).body)
    assert (pending.event, pending.notice, pending.order_id) == ("WAIT_BUYER_PAY", None, ORDER)
    server.book.close(local.PROVIDER, ORDER)
    closed = await verified(local_keys, server.notification(waiting).body)
    assert (closed.event, closed.notice, closed.refund, closed.order_id) == ("TRADE_CLOSED", None, None, ORDER)


async def test_a_refund_notification_is_never_read_as_a_payment(local_keys: LocalKeys) -> None:
    params = dict(parse_qsl(notification(local_keys).body.decode()))
    refund = {**params, "out_biz_no": "rf-1", "refund_fee": "12.34", "gmt_refund": params["gmt_payment"]}
    callback = await verified(local_keys, resign(local_keys, refund))
    assert callback.notice is None
    assert callback.refund is not None and callback.refund.refund_id == "rf-1"
    assert callback.refund.answer.status == "succeeded"


def test_alipay_is_answered_with_a_plain_success(local_keys: LocalKeys) -> None:
    adapter = alipay(local_keys)
    taken = adapter.reply(CallbackAck(200, "duplicate", "payment already applied", ORDER))
    assert (taken.status_code, taken.body) == (200, b"success")
    assert adapter.reply(CallbackAck(422, "amount_mismatch", "no")).body != b"success"


def test_bare_base64_keys_as_alipay_s_console_shows_them_are_read(local_keys: LocalKeys) -> None:
    env = local_keys.payments_env("")
    assert not env["PAYMENTS_ALIPAY_PUBLIC_KEY"].startswith("-----")
    assert env["PAYMENTS_ALIPAY_PUBLIC_KEY"] == bare(public_pem(local_keys.alipay_key.public_key()))
    alipay(local_keys)  # loads
