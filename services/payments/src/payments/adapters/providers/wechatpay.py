"""WeChatPayProvider: WeChat Pay API v3 for one merchant (direct mode).

Callbacks are verified with the platform certificate's SHA256withRSA signature over
"<Wechatpay-Timestamp>\\n<Wechatpay-Nonce>\\n<body>\\n" inside a timestamp window, and their resource is
decrypted with AEAD_AES_256_GCM under the APIv3 key. Requests carry a `WECHATPAY2-SHA256-RSA2048`
Authorization signed with the merchant key, and every answer we act on has its signature checked.
"""

import base64
import binascii
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError

from payments.adapters.providers import keys
from payments.adapters.providers import wechatpay_wire as wire
from payments.adapters.providers.transport import AiohttpWire, Unanswered, Wire, header, problems, send
from payments.domain import (
    CallbackAck,
    CallbackRejected,
    CloseAnswer,
    CloseStatus,
    PaymentQuery,
    PaymentState,
    ProviderReply,
    RefundAnswer,
    RefundNotice,
    RefundRequest,
    VerifiedCallback,
)

log = logging.getLogger(__name__)

API = "https://api.mch.weixin.qq.com"


@dataclass(frozen=True)
class WeChatPayConfig:
    """One merchant's credentials. `platform_keys` maps each platform certificate's serial (or WeChat Pay
    public key id) to its public key; during a rotation both the old and the new one are there."""

    mchid: str
    appid: str
    merchant_serial: str
    merchant_key: rsa.RSAPrivateKey = field(repr=False)
    apiv3_key: bytes = field(repr=False)
    platform_keys: Mapping[str, rsa.RSAPublicKey]
    base_url: str = API
    notify_url: str = ""
    tolerance_s: int = 300
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if len(self.apiv3_key) != 32:
            raise ValueError("the WeChat Pay APIv3 key is 32 bytes")
        if not self.platform_keys:
            raise ValueError("WeChat Pay needs at least one platform certificate or public key")


class WeChatPayProvider:
    """The PaymentProvider for WeChat Pay: amounts in fen, our order id as out_trade_no, our refund id as
    out_refund_no."""

    def __init__(
        self,
        config: WeChatPayConfig,
        *,
        name: str = "wechatpay",
        clock: Callable[[], float] = time.time,
        http: Wire | None = None,
    ) -> None:
        self._config = config
        self._name = name
        self._clock = clock
        self._http = http or AiohttpWire(timeout_s=config.timeout_s)

    @property
    def name(self) -> str:
        return self._name

    async def aclose(self) -> None:
        await self._http.aclose()

    def _check_signature(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise CallbackRejected unless `body` carries a fresh platform signature."""
        timestamp, nonce = header(headers, "wechatpay-timestamp"), header(headers, "wechatpay-nonce")
        signature, serial = header(headers, "wechatpay-signature"), header(headers, "wechatpay-serial")
        if not (timestamp and nonce and signature and serial):
            raise CallbackRejected(401, "signature_missing", "Wechatpay-Timestamp, -Nonce, -Signature and -Serial")
        scheme = header(headers, "wechatpay-signature-type") or wire.SCHEME
        if scheme != wire.SCHEME or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
            raise CallbackRejected(401, "signature_malformed", f"expected a {wire.SCHEME} signature, unix seconds")
        now, tolerance = self._clock(), self._config.tolerance_s
        if int(timestamp) < now - tolerance:
            raise CallbackRejected(401, "signature_expired", f"signature is older than {tolerance} s")
        if int(timestamp) > now + tolerance:
            raise CallbackRejected(401, "signature_from_future", f"signature is more than {tolerance} s ahead")
        key = self._config.platform_keys.get(serial.upper()) or self._config.platform_keys.get(serial)
        if key is None:
            raise CallbackRejected(401, "unknown_certificate", f"no platform certificate {serial[:64]!r} configured")
        if not keys.verify(key, wire.signed_message(timestamp, nonce, body), signature):
            raise CallbackRejected(401, "signature_mismatch", "signature does not match the platform certificate")

    def _decrypt(self, resource: wire.Resource) -> bytes:
        if resource.algorithm != "AEAD_AES_256_GCM":
            raise CallbackRejected(422, "invalid_callback", f"unsupported algorithm {resource.algorithm[:40]!r}")
        try:
            sealed = base64.b64decode(resource.ciphertext, validate=True)
            return AESGCM(self._config.apiv3_key).decrypt(
                resource.nonce.encode(), sealed, resource.associated_data.encode()
            )
        except (binascii.Error, ValueError, InvalidTag):
            raise CallbackRejected(401, "resource_undecryptable", "it does not open with our APIv3 key") from None

    async def verify_callback(self, body: bytes, headers: Mapping[str, str]) -> VerifiedCallback:
        self._check_signature(headers, body)
        try:
            notification = wire.Notification.model_validate_json(body)
            if notification.resource_type != "encrypt-resource":
                raise CallbackRejected(422, "invalid_callback", "resource_type must be encrypt-resource")
            plain = self._decrypt(notification.resource)
            if notification.resource.original_type == "refund" or notification.event_type.startswith("REFUND."):
                return self._refund_callback(notification.event_type, wire.Refund.model_validate_json(plain))
            return self._payment_callback(notification.event_type, wire.Transaction.model_validate_json(plain))
        except ValidationError as exc:
            raise CallbackRejected(422, "invalid_callback", problems(exc)) from None

    def _ours(self, mchid: str, appid: str = "") -> None:
        if mchid != self._config.mchid or (appid and appid != self._config.appid):
            raise CallbackRejected(422, "foreign_merchant", f"meant for merchant {mchid[:32]!r}, app {appid[:32]!r}")

    def _payment_callback(self, event: str, txn: wire.Transaction) -> VerifiedCallback:
        self._ours(txn.mchid, txn.appid)
        query = self._payment(txn)
        if query.state is PaymentState.UNKNOWN:
            raise CallbackRejected(422, "invalid_callback", query.reason)
        return VerifiedCallback(self._name, event, query.order_id, query.notice())

    def _refund_callback(self, event: str, refund: wire.Refund) -> VerifiedCallback:
        ours = wire.order_id(refund.out_trade_no)
        notice = RefundNotice(ours, refund.out_refund_no, refund.answer())
        return VerifiedCallback(self._name, event, ours, refund=notice)

    def _payment(self, txn: wire.Transaction) -> PaymentQuery:
        state = wire.TRADE_STATES.get(txn.trade_state, PaymentState.UNKNOWN)
        ours = wire.order_id(txn.out_trade_no)
        if state is PaymentState.PAID and (txn.amount is None or not txn.transaction_id):
            return PaymentQuery(PaymentState.UNKNOWN, ours, self._name, reason="paid without amount or id")
        paid_at = txn.paid_at()
        if state is PaymentState.PAID and paid_at is None:
            # success_time is documented optional: a paid trade without it was paid by the time we read it (read as
            # unknown, its order was asked about for ever and never credited; Alipay's send_pay_date alike).
            paid_at = datetime.fromtimestamp(self._clock(), UTC)
        amount = txn.amount.total if txn.amount else None
        currency = txn.amount.currency if txn.amount else None
        reason = "" if state is PaymentState.PAID else f"trade_state {txn.trade_state[:40]}"
        txn_id = txn.transaction_id or None
        return PaymentQuery(state, ours, self._name, txn_id, amount, currency, paid_at, reason)

    def reply(self, ack: CallbackAck) -> ProviderReply:
        if ack.accepted:
            return ProviderReply(204, "application/json", b"")
        body = orjson.dumps({"code": "FAIL", "message": f"{ack.code}: {ack.detail}"[:200]})
        return ProviderReply(ack.status_code, "application/json", body)

    async def _call(self, method: str, path: str, payload: dict[str, object] | None = None) -> tuple[int, bytes]:
        """Send one signed request; the status and body of an answer whose signature held (or of a refusal
        that came unsigned). Unanswered when there is no answer to trust."""
        url = self._config.base_url + path
        split = urlsplit(url)
        signed_path = (split.path + (f"?{split.query}" if split.query else "")).encode()  # as it goes on the wire
        body = b"" if payload is None else orjson.dumps(payload)
        timestamp, nonce = int(self._clock()), secrets.token_hex(16).upper()
        message = wire.signed_message(method, signed_path, str(timestamp), nonce, body)
        signature = keys.sign(self._config.merchant_key, message)
        headers = {
            "Authorization": wire.authorization(
                self._config.mchid, self._config.merchant_serial, nonce, timestamp, signature
            ),
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": "credited-payments",
        }
        response = await send(self._http, method, url, body, headers, "WeChat Pay")
        signed = "wechatpay-signature" in response.headers
        if response.is_success or signed:
            try:
                self._check_signature(response.headers, response.content)
            except CallbackRejected as exc:
                raise Unanswered(f"WeChat Pay's answer failed its signature check: {exc.code}") from None
        return response.status_code, response.content

    @staticmethod
    def _error(body: bytes) -> wire.Error:
        try:
            return wire.Error.model_validate_json(body)
        except ValidationError:
            return wire.Error()

    async def query_payment(self, order_id: str) -> PaymentQuery:
        path = f"/v3/pay/transactions/out-trade-no/{wire.out_trade_no(order_id)}?mchid={self._config.mchid}"
        try:
            status, body = await self._call("GET", path)
            if status == 200:
                txn = wire.Transaction.model_validate_json(body)
                if txn.mchid != self._config.mchid or wire.order_id(txn.out_trade_no) != order_id:
                    raise Unanswered("WeChat Pay answered about another order or merchant")
                return self._payment(txn)
        except (Unanswered, ValidationError) as exc:
            return PaymentQuery(PaymentState.UNKNOWN, order_id, self._name, reason=str(exc)[:200])
        error = self._error(body)
        if status == 404 and error.code == "ORDER_NOT_EXIST":
            return PaymentQuery(PaymentState.NOT_FOUND, order_id, self._name, reason=error.message[:200])
        reason = f"WeChat Pay answered {status} {error.code}: {error.message}"[:200]
        return PaymentQuery(PaymentState.UNKNOWN, order_id, self._name, reason=reason)

    async def refund(self, request: RefundRequest) -> RefundAnswer:
        payload: dict[str, object] = {
            "transaction_id": request.provider_txn_id,
            "out_refund_no": request.refund_id,
            "amount": {"refund": request.amount, "total": request.paid_amount, "currency": request.currency},
        }
        if request.reason:
            payload["reason"] = request.reason[:80]
        if self._config.notify_url:
            payload["notify_url"] = self._config.notify_url
        path = "/v3/refund/domestic/refunds"
        return await self._refund_answer("POST", path, request.order_id, request.refund_id, payload)

    async def query_refund(self, order_id: str, refund_id: str) -> RefundAnswer:
        return await self._refund_answer("GET", f"/v3/refund/domestic/refunds/{refund_id}", order_id, refund_id)

    async def _refund_answer(
        self, method: str, path: str, order_id: str, refund_id: str, payload: dict[str, object] | None = None
    ) -> RefundAnswer:
        try:
            status, body = await self._call(method, path, payload)
            if status == 200:
                refund = wire.Refund.model_validate_json(body)
                # Signed, but about another refund or order (an answer replayed by whoever stands between us and
                # WeChat Pay): as a payment query's answer about another order, believed for nothing.
                if refund.out_refund_no != refund_id or (
                    refund.out_trade_no and wire.order_id(refund.out_trade_no) != order_id
                ):
                    raise Unanswered("WeChat Pay answered about another refund or order")
                return refund.answer()
        except (Unanswered, ValidationError) as exc:
            return RefundAnswer("unknown", reason=str(exc)[:200])
        error = self._error(body)
        reason = f"WeChat Pay answered {status} {error.code}: {error.message}"[:200]
        if status == 404:
            return RefundAnswer("unknown", reason=f"no such refund ({reason})")
        # Busy, rate-limited or short of balance: the same request may succeed later; the rest is final.
        retry = status == 429 or error.code in {"SYSTEM_ERROR", "FREQUENCY_LIMITED", "NOT_ENOUGH"}
        return RefundAnswer("unknown" if retry else "failed", reason=reason)

    async def close(self, order_id: str) -> CloseAnswer:
        trade = wire.out_trade_no(order_id)
        payload: dict[str, object] = {"mchid": self._config.mchid}
        try:
            status, body = await self._call("POST", f"/v3/pay/transactions/out-trade-no/{trade}/close", payload)
        except Unanswered as exc:
            return CloseAnswer(CloseStatus.UNKNOWN, str(exc)[:200])
        if status in (200, 204):
            return CloseAnswer(CloseStatus.CLOSED)
        error = self._error(body)
        reason = f"WeChat Pay answered {status} {error.code}: {error.message}"[:200]
        if error.code == "ORDERPAID":
            return CloseAnswer(CloseStatus.ALREADY_PAID, reason)
        if error.code == "ORDER_CLOSED":
            return CloseAnswer(CloseStatus.CLOSED, reason)
        if error.code == "ORDER_NOT_EXIST":
            return CloseAnswer(CloseStatus.NOT_FOUND, reason)
        return CloseAnswer(CloseStatus.UNKNOWN, reason)
