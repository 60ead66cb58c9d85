"""WeChat Pay callbacks: what the local provider signs is accepted by our adapter and by the official
wechatpayv3 SDK; what was tampered with, signed with another key, stale, from the future or replayed
with another amount is refused."""

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from wechatpayv3 import WeChatPay, WeChatPayType

from credited.providers import wechatpay as local
from credited.providers.book import Book
from credited.providers.faults import Faults
from credited.providers.keys import LocalKeys
from credited.providers.notifier import Notification
from payments.adapters.providers import wechatpay_wire as wire
from payments.domain import CallbackAck, CallbackRejected, VerifiedCallback
from tests.payments.providers.conftest import platform_cert_dir, wechatpay

ORDER = "ord_" + "0123456789abcdef" * 2


def paid_notification(keys: LocalKeys, *, amount: int = 600, timestamp: int | None = None) -> Notification:
    book = Book()
    server = local.WeChatPayServer(keys, book, Faults())
    book.open(local.PROVIDER, local.trade_no_for(ORDER), amount)
    return server.notification(book.pay(local.PROVIDER, local.trade_no_for(ORDER)), timestamp)


def sdk(keys: LocalKeys, tmp_path: Path) -> WeChatPay:
    """The official SDK as a merchant of the local provider, its platform certificate on disk."""
    return WeChatPay(
        wechatpay_type=WeChatPayType.NATIVE,
        mchid=keys.mchid,
        private_key=local_private_pem(keys),
        cert_serial_no=f"{keys.merchant_certificate.serial_number:X}",
        appid=keys.wechat_appid,
        apiv3_key=keys.apiv3_key,
        cert_dir=platform_cert_dir(keys, tmp_path),
    )


def local_private_pem(keys: LocalKeys) -> str:
    return keys.payments_env("")["PAYMENTS_WECHATPAY_MERCHANT_PRIVATE_KEY"]


async def verified(keys: LocalKeys, note: Notification) -> VerifiedCallback:
    return await wechatpay(keys).verify_callback(note.body, note.headers)


async def refused(keys: LocalKeys, body: bytes, headers: dict[str, str]) -> CallbackRejected:
    with pytest.raises(CallbackRejected) as caught:
        await wechatpay(keys).verify_callback(body, headers)
    return caught.value


async def test_a_paid_notification_from_the_local_provider_is_accepted_and_the_sdk_agrees(
    local_keys: LocalKeys, tmp_path: Path
) -> None:
    note = paid_notification(local_keys, amount=600)
    callback = await verified(local_keys, note)
    assert callback.event == "TRANSACTION.SUCCESS"
    assert callback.order_id == ORDER
    notice = callback.notice
    assert notice is not None and notice.succeeded
    assert (notice.order_id, notice.provider, notice.amount, notice.currency) == (ORDER, "wechatpay", 600, "CNY")
    assert notice.paid_at.utcoffset() is not None and abs(notice.paid_at.timestamp() - time.time()) < 60

    checked = sdk(local_keys, tmp_path).callback(dict(note.headers), note.body)
    assert checked is not None, "the official SDK refused the local provider's notification"
    resource = checked["resource"]
    assert resource["out_trade_no"] == local.trade_no_for(ORDER)
    assert resource["transaction_id"] == notice.provider_txn_id
    assert resource["amount"]["total"] == notice.amount


async def test_headers_are_read_whatever_their_case(local_keys: LocalKeys) -> None:
    note = paid_notification(local_keys)
    lower = {k.lower(): v for k, v in note.headers.items()}
    assert (await wechatpay(local_keys).verify_callback(note.body, lower)).notice is not None


def _tamper_amount(body: bytes, keys: LocalKeys, amount: int) -> bytes:
    """The same notification with another amount, sealed again with the right APIv3 key: what a replay
    by someone who knows the APIv3 key (but not the platform key) looks like."""
    envelope = json.loads(body)
    resource = envelope["resource"]
    aead = AESGCM(keys.apiv3_key.encode())
    sealed = base64.b64decode(resource["ciphertext"])
    plain = json.loads(aead.decrypt(resource["nonce"].encode(), sealed, b"transaction"))
    plain["amount"]["total"] = plain["amount"]["payer_total"] = amount
    sealed = aead.encrypt(resource["nonce"].encode(), orjson.dumps(plain), b"transaction")
    resource["ciphertext"] = base64.b64encode(sealed).decode()
    return orjson.dumps(envelope)


TAMPERINGS: dict[str, Callable[[bytes, LocalKeys], bytes]] = {
    "a changed summary": lambda body, keys: body.replace(b'"summary":"', b'"summary":"x'),
    "a changed event": lambda body, keys: body.replace(b"TRANSACTION.SUCCESS", b"TRANSACTION.SUCCEEDED"),
    "a changed amount": lambda body, keys: _tamper_amount(body, keys, 1),
    "one byte more": lambda body, keys: body + b" ",
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
async def test_a_tampered_body_is_refused_by_us_and_by_the_sdk(
    local_keys: LocalKeys, tmp_path: Path, tampering: str
) -> None:
    note = paid_notification(local_keys)
    body = TAMPERINGS[tampering](note.body, local_keys)
    assert body != note.body
    assert (await refused(local_keys, body, dict(note.headers))).code == "signature_mismatch"
    assert sdk(local_keys, tmp_path).callback(dict(note.headers), body) is None


async def test_a_replay_with_another_amount_is_refused(local_keys: LocalKeys, tmp_path: Path) -> None:
    note = paid_notification(local_keys, amount=600)
    assert (await verified(local_keys, note)).notice is not None  # the original, once
    replay = _tamper_amount(note.body, local_keys, 60000)
    rejection = await refused(local_keys, replay, dict(note.headers))
    assert (rejection.status_code, rejection.code) == (401, "signature_mismatch")
    assert sdk(local_keys, tmp_path).callback(dict(note.headers), replay) is None


async def test_a_notification_signed_with_another_platform_key_is_refused(
    local_keys: LocalKeys, other_keys: LocalKeys, tmp_path: Path
) -> None:
    forged = paid_notification(other_keys)
    # Same certificate serial as ours, so only the signature itself can tell.
    headers = {**forged.headers, "Wechatpay-Serial": f"{local_keys.platform_certificate.serial_number:X}"}
    assert (await refused(local_keys, forged.body, headers)).code == "signature_mismatch"
    assert sdk(local_keys, tmp_path).callback(headers, forged.body) is None


async def test_a_notification_from_a_certificate_we_do_not_have_is_refused(
    local_keys: LocalKeys, other_keys: LocalKeys
) -> None:
    forged = paid_notification(other_keys)
    assert (await refused(local_keys, forged.body, dict(forged.headers))).code == "unknown_certificate"


async def test_a_resource_sealed_with_another_apiv3_key_does_not_open(
    local_keys: LocalKeys, other_keys: LocalKeys
) -> None:
    mixed = LocalKeys(**{**local_keys.__dict__, "apiv3_key": other_keys.apiv3_key})
    note = paid_notification(mixed)
    assert (await refused(local_keys, note.body, dict(note.headers))).code == "resource_undecryptable"


@pytest.mark.parametrize(("offset", "code"), [(-360, "signature_expired"), (360, "signature_from_future")])
async def test_a_stale_or_future_timestamp_is_refused(local_keys: LocalKeys, offset: int, code: str) -> None:
    note = paid_notification(local_keys, timestamp=int(time.time()) + offset)
    rejection = await refused(local_keys, note.body, dict(note.headers))
    assert (rejection.status_code, rejection.code) == (401, code)


async def test_a_timestamp_inside_the_window_is_accepted(local_keys: LocalKeys) -> None:
    note = paid_notification(local_keys, timestamp=int(time.time()) - 250)
    assert (await verified(local_keys, note)).notice is not None


@pytest.mark.parametrize(
    "missing", ["Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial"]
)
async def test_a_notification_without_its_signature_headers_is_refused(local_keys: LocalKeys, missing: str) -> None:
    note = paid_notification(local_keys)
    headers = {k: v for k, v in note.headers.items() if k != missing}
    assert (await refused(local_keys, note.body, headers)).code == "signature_missing"


async def test_a_notification_for_another_merchant_is_refused(local_keys: LocalKeys) -> None:
    note = paid_notification(local_keys)
    adapter = wechatpay(local_keys, wechatpay_mchid="1900000999")
    with pytest.raises(CallbackRejected) as caught:
        await adapter.verify_callback(note.body, note.headers)
    assert (caught.value.status_code, caught.value.code) == (422, "foreign_merchant")


def test_wechat_pay_is_answered_in_its_own_form(local_keys: LocalKeys) -> None:
    adapter = wechatpay(local_keys)
    taken = adapter.reply(CallbackAck(200, "applied", "payment succeeded", ORDER))
    assert (taken.status_code, taken.body) == (204, b"")
    refused_reply = adapter.reply(CallbackAck(401, "signature_mismatch", "no"))
    assert refused_reply.status_code == 401
    assert orjson.loads(refused_reply.body)["code"] == "FAIL"


def sealed(keys: LocalKeys, event: str, kind: str, resource: dict[str, object]) -> tuple[bytes, dict[str, str]]:
    """A notification of `event` carrying `resource`, sealed and signed as WeChat Pay does."""
    nonce = "0123456789ab"
    ciphertext = AESGCM(keys.apiv3_key.encode()).encrypt(nonce.encode(), orjson.dumps(resource), kind.encode())
    envelope = {
        "id": "EV-1",
        "event_type": event,
        "resource_type": "encrypt-resource",
        "resource": {
            "original_type": kind,
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": base64.b64encode(ciphertext).decode(),
            "associated_data": kind,
            "nonce": nonce,
        },
    }
    body = orjson.dumps(envelope)
    return body, local.WeChatPayServer(keys, Book(), Faults()).signed_headers(body)


async def test_a_refund_notification_is_never_read_as_a_payment(local_keys: LocalKeys) -> None:
    refund = {
        "mchid": local_keys.mchid,
        "out_trade_no": local.trade_no_for(ORDER),
        "transaction_id": "4200000000000000",
        "out_refund_no": "refund-1",
        "refund_id": "50000000000000000000",
        "refund_status": "SUCCESS",
        "amount": {"total": 600, "refund": 600, "payer_total": 600, "payer_refund": 600},
    }
    callback = await wechatpay(local_keys).verify_callback(*sealed(local_keys, "REFUND.SUCCESS", "refund", refund))
    assert callback.notice is None and callback.order_id == ORDER
    assert callback.refund is not None and callback.refund.refund_id == "refund-1"
    assert callback.refund.answer.status == "succeeded"


async def test_a_success_that_does_not_say_how_much_is_refused(local_keys: LocalKeys) -> None:
    book = Book()
    book.open(local.PROVIDER, local.trade_no_for(ORDER), 600)
    paid = book.pay(local.PROVIDER, local.trade_no_for(ORDER))
    transaction = local.WeChatPayServer(local_keys, book, Faults()).transaction(paid)
    del transaction["amount"]
    body, headers = sealed(local_keys, "TRANSACTION.SUCCESS", "transaction", transaction)
    assert (await refused(local_keys, body, headers)).code == "invalid_callback"


@pytest.mark.parametrize(
    ("order_id", "trade_no"),
    [(ORDER, "0123456789abcdef" * 2), ("order-123456", "order-123456"), ("A" * 32, "A" * 32)],
)
def test_our_order_ids_become_wechat_pay_trade_numbers_and_back(order_id: str, trade_no: str) -> None:
    assert wire.out_trade_no(order_id) == trade_no and wire.order_id(trade_no) == order_id


@pytest.mark.parametrize("order_id", ["0123456789abcdef" * 2, "a.b:c", "x" * 33, "abc", "ord_" + "0" * 33])
def test_an_order_id_wechat_pay_cannot_carry_or_that_would_read_back_as_another_is_refused(order_id: str) -> None:
    with pytest.raises(ValueError, match="out_trade_no"):
        wire.out_trade_no(order_id)


async def test_a_success_without_its_success_time_is_a_payment_at_the_time_it_was_read(local_keys: LocalKeys) -> None:
    """WeChat Pay documents success_time as optional: a signed SUCCESS without it is still a payment (refused, WeChat
    Pay would send it again for a day while the query read it unknown for ever: the user charged, never credited)."""
    book = Book()
    book.open(local.PROVIDER, local.trade_no_for(ORDER), 600)
    paid = book.pay(local.PROVIDER, local.trade_no_for(ORDER))
    transaction = local.WeChatPayServer(local_keys, book, Faults()).transaction(paid)
    del transaction["success_time"]
    body, headers = sealed(local_keys, "TRANSACTION.SUCCESS", "transaction", transaction)
    before = time.time()
    callback = await wechatpay(local_keys).verify_callback(body, headers)
    notice = callback.notice
    assert notice is not None and notice.succeeded and notice.amount == 600
    assert before - 1 <= notice.paid_at.timestamp() <= time.time() + 1
