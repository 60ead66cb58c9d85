"""AlipayProvider: Alipay's open API for one app (public key mode, RSA2).

Asynchronous notifications arrive form-encoded and are verified with Alipay's public key: SHA256withRSA
over the sorted `k=v&...` parameters without sign and sign_type; they are answered with a plain
`success`. Requests go to the gateway form-encoded and RSA2-signed with the app's private key, and every
answer is verified with Alipay's public key before it is believed.
"""

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode

import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

from payments.adapters.providers import alipay_wire as wire
from payments.adapters.providers import keys, yuan
from payments.adapters.providers.transport import AiohttpWire, Unanswered, Wire, send
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

GATEWAY = "https://openapi.alipay.com/gateway.do"
_NOTIFY_UNSIGNED = frozenset({"sign", "sign_type"})
_REQUEST_UNSIGNED = frozenset({"sign"})


@dataclass(frozen=True)
class AlipayConfig:
    """One Alipay app: its id, its private key (requests), Alipay's public key (notifications, answers)."""

    app_id: str
    app_private_key: rsa.RSAPrivateKey = field(repr=False)
    alipay_public_key: rsa.RSAPublicKey
    gateway: str = GATEWAY
    seller_id: str = ""
    tolerance_s: int = 300
    timeout_s: float = 10.0


def _form(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise CallbackRejected(422, "invalid_callback", "the body is not a UTF-8 form") from None
    params = dict(pairs)
    if len(params) != len(pairs):
        raise CallbackRejected(422, "invalid_callback", "a parameter appears twice")
    if params.get("charset", "utf-8").lower() != "utf-8":
        raise CallbackRejected(422, "invalid_callback", "only charset utf-8 is configured")
    return params


class AlipayProvider:
    """The PaymentProvider for Alipay: our order id as out_trade_no, our refund id as out_request_no, and
    amounts as yuan strings converted exactly to and from fen. Alipay settles these trades in CNY; a trade
    priced in another currency (trans_currency) is read in that one, so it never matches a CNY order."""

    def __init__(
        self,
        config: AlipayConfig,
        *,
        name: str = "alipay",
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

    def _check_signature(self, params: Mapping[str, str]) -> None:
        sign = params.get("sign")
        if not sign:
            raise CallbackRejected(401, "signature_missing", "the notification has no sign")
        if params.get("sign_type", "RSA2") != "RSA2":
            raise CallbackRejected(401, "signature_malformed", "only sign_type RSA2 is accepted")
        content = wire.signing_content(params.items(), leave_out=_NOTIFY_UNSIGNED)
        if not keys.verify(self._config.alipay_public_key, content, sign):
            raise CallbackRejected(401, "signature_mismatch", "sign does not match Alipay's public key")
        try:
            sent = wire.parse_time(params.get("notify_time", "")).timestamp()
        except ValueError:
            raise CallbackRejected(401, "signature_malformed", "notify_time must be yyyy-MM-dd HH:mm:ss") from None
        now, tolerance = self._clock(), self._config.tolerance_s
        if sent < now - tolerance:
            raise CallbackRejected(401, "signature_expired", f"notify_time is older than {tolerance} s")
        if sent > now + tolerance:
            raise CallbackRejected(401, "signature_from_future", f"notify_time is more than {tolerance} s ahead")

    async def verify_callback(self, body: bytes, headers: Mapping[str, str]) -> VerifiedCallback:
        params = _form(body)
        self._check_signature(params)
        app, seller = params.get("app_id", ""), params.get("seller_id", "")
        if app != self._config.app_id or (self._config.seller_id and seller != self._config.seller_id):
            raise CallbackRejected(422, "foreign_merchant", f"meant for app {app[:32]!r}, seller {seller[:32]!r}")
        order_id, status = params.get("out_trade_no", ""), params.get("trade_status", "")
        if not order_id or not status:
            raise CallbackRejected(422, "invalid_callback", "out_trade_no and trade_status are required")
        if params.get("out_biz_no") or params.get("refund_fee"):
            # A refund's notification also says TRADE_SUCCESS (partial) or TRADE_CLOSED (full): not a payment.
            answer = RefundAnswer("succeeded" if params.get("gmt_refund") else "unknown", params.get("out_biz_no", ""))
            refund = RefundNotice(order_id, params.get("out_biz_no", ""), answer)
            return VerifiedCallback(self._name, f"refund:{status}", order_id, refund=refund)
        try:
            query = self._payment(order_id, params, "gmt_payment")
        except ValueError as exc:
            raise CallbackRejected(422, "invalid_callback", str(exc)[:200]) from None
        # TRADE_CLOSED of an unpaid trade is no failed payment: Alipay closes a trade at its timeout or when our
        # expiry closes it, and tells of no failed attempt. Its notice often arrives before that expiry is recorded:
        # read as a failure, the order would be announced payment_failed and then expired. It carries no outcome;
        # the order's query reads the trade closed and ends the order expired, announced once.
        return VerifiedCallback(self._name, status, order_id, query.notice())

    def _payment(self, order_id: str, fields: Mapping[str, object], paid_at_field: str) -> PaymentQuery:
        """A trade as a PaymentQuery; ValueError when a paid trade lacks its number, amount or time."""
        status = str(fields.get("trade_status", ""))
        state = wire.TRADE_STATES.get(status, PaymentState.UNKNOWN)
        txn = str(fields.get("trade_no") or "") or None
        amount = yuan.to_fen(str(fields["total_amount"])) if fields.get("total_amount") else None
        paid_at = wire.parse_time(str(fields[paid_at_field])) if fields.get(paid_at_field) else None
        if state is PaymentState.PAID and paid_at is None and paid_at_field == "send_pay_date":
            # alipay.trade.query documents send_pay_date as optional (the time the money went to the seller): a
            # paid trade without it is paid, by the time of this answer at the latest. Read as unknown, its order
            # was asked about for ever and never credited.
            paid_at = datetime.fromtimestamp(self._clock(), UTC)
        if state is PaymentState.PAID and (txn is None or amount is None or paid_at is None):
            raise ValueError(f"a paid trade needs trade_no, total_amount and {paid_at_field}")
        currency = None if amount is None else wire.currency(fields)
        reason = "" if state is PaymentState.PAID else f"trade_status {status[:40]}"
        return PaymentQuery(state, order_id, self._name, txn, amount, currency, paid_at, reason)

    def reply(self, ack: CallbackAck) -> ProviderReply:
        # Anything but the exact text `success` makes Alipay send the notification again later.
        if ack.accepted:
            return ProviderReply(200, "text/plain; charset=utf-8", b"success")
        return ProviderReply(ack.status_code, "text/plain; charset=utf-8", b"fail")

    async def _call(self, method: str, biz: Mapping[str, object]) -> tuple[str, dict[str, object]]:
        """(code, answer) of one signed gateway request whose answer's signature held; Unanswered when
        there is no answer to trust, including Alipay's own "service unavailable" (20000)."""
        params = {
            "app_id": self._config.app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": wire.format_time(self._clock()),
            "version": "1.0",
            "biz_content": orjson.dumps(biz).decode(),
        }
        content = wire.signing_content(params.items(), leave_out=_REQUEST_UNSIGNED)
        params["sign"] = keys.sign(self._config.app_private_key, content)
        body = urlencode(params).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded;charset=utf-8", "Accept": "application/json"}
        response = await send(self._http, "POST", self._config.gateway, body, headers, "Alipay")
        try:
            answer, signed, sign = wire.response_part(response.text, method)
        except ValueError as exc:
            raise Unanswered(f"Alipay's answer could not be read: {exc}"[:200]) from None
        if sign is None or not keys.verify(self._config.alipay_public_key, signed.encode(), sign):
            raise Unanswered("Alipay's answer failed its signature check")
        code = str(answer.get("code", ""))
        if code == "20000":
            raise Unanswered(f"Alipay is unavailable: {answer.get('sub_msg') or answer.get('msg')}"[:200])
        return code, answer

    @staticmethod
    def _why(code: str, answer: Mapping[str, object]) -> str:
        return f"Alipay answered {code} {answer.get('sub_code', '')}: {answer.get('sub_msg') or answer.get('msg')}"[
            :200
        ]

    async def query_payment(self, order_id: str) -> PaymentQuery:
        try:
            code, answer = await self._call("alipay.trade.query", {"out_trade_no": order_id})
            if code == wire.SUCCESS:
                if answer.get("out_trade_no") != order_id:
                    raise Unanswered("Alipay answered about another order")
                return self._payment(order_id, answer, "send_pay_date")
        except (Unanswered, ValueError) as exc:
            return PaymentQuery(PaymentState.UNKNOWN, order_id, self._name, reason=str(exc)[:200])
        if answer.get("sub_code") == "ACQ.TRADE_NOT_EXIST":
            return PaymentQuery(PaymentState.NOT_FOUND, order_id, self._name, reason=self._why(code, answer))
        return PaymentQuery(PaymentState.UNKNOWN, order_id, self._name, reason=self._why(code, answer))

    async def refund(self, request: RefundRequest) -> RefundAnswer:
        if request.currency != "CNY":
            return RefundAnswer("failed", reason=f"Alipay refunds these trades in CNY, not {request.currency}")
        biz: dict[str, object] = {
            "out_trade_no": request.order_id,
            "trade_no": request.provider_txn_id,
            "refund_amount": yuan.from_fen(request.amount),
            "out_request_no": request.refund_id,
        }
        if request.reason:
            biz["refund_reason"] = request.reason[:80]
        try:
            code, answer = await self._call("alipay.trade.refund", biz)
        except Unanswered as exc:
            return RefundAnswer("unknown", reason=str(exc))
        if code == wire.SUCCESS and answer.get("out_trade_no") != request.order_id:
            # Signed, but about another trade (an answer replayed by whoever stands between us and Alipay): as a
            # payment query's answer about another order, believed for nothing.
            return RefundAnswer("unknown", reason="Alipay answered about another trade")
        if code == wire.SUCCESS and answer.get("fund_change") == "Y":
            return RefundAnswer("succeeded", request.refund_id)
        if code == wire.SUCCESS:  # "N": no money moved by this request, e.g. a repeat: ask what became of it
            return await self.query_refund(request.order_id, request.refund_id)
        retry = answer.get("sub_code") in wire.RETRYABLE
        return RefundAnswer("unknown" if retry else "failed", reason=self._why(code, answer))

    async def query_refund(self, order_id: str, refund_id: str) -> RefundAnswer:
        biz = {"out_trade_no": order_id, "out_request_no": refund_id, "query_options": ["gmt_refund_pay"]}
        try:
            code, answer = await self._call("alipay.trade.fastpay.refund.query", biz)
        except Unanswered as exc:
            return RefundAnswer("unknown", reason=str(exc))
        if code != wire.SUCCESS:
            return RefundAnswer("unknown", reason=self._why(code, answer))
        if not answer.get("refund_amount"):
            return RefundAnswer("unknown", reason="no such refund")
        # Alipay documents both ids as optional in this answer: each one it gives must be ours, and one at least.
        named = {k: answer.get(k) for k in ("out_trade_no", "out_request_no") if answer.get(k)}
        if (
            not named
            or named.get("out_trade_no", order_id) != order_id
            or named.get("out_request_no", refund_id) != refund_id
        ):
            return RefundAnswer("unknown", reason="Alipay answered about another refund")
        # With the refund's data in the answer, an empty refund_status also means it succeeded.
        status = answer.get("refund_status") or "REFUND_SUCCESS"
        if status == "REFUND_SUCCESS":
            return RefundAnswer("succeeded", refund_id)
        return RefundAnswer("pending", refund_id, f"refund_status {str(status)[:40]}")

    async def close(self, order_id: str) -> CloseAnswer:
        try:
            code, answer = await self._call("alipay.trade.close", {"out_trade_no": order_id})
        except Unanswered as exc:
            return CloseAnswer(CloseStatus.UNKNOWN, str(exc))
        if code == wire.SUCCESS:
            # A signed answer can be replayed: one about another trade closes nothing of ours (payments also reads
            # the trade's state before it expires the order, for answers that name none).
            if answer.get("out_trade_no") not in (None, "", order_id):
                return CloseAnswer(CloseStatus.UNKNOWN, "Alipay answered about another trade")
            return CloseAnswer(CloseStatus.CLOSED)
        sub_code = answer.get("sub_code")
        if sub_code == "ACQ.TRADE_NOT_EXIST":
            return CloseAnswer(CloseStatus.NOT_FOUND, self._why(code, answer))
        if sub_code == "ACQ.TRADE_STATUS_ERROR":  # paid, or closed before: the trade says which
            state = (await self.query_payment(order_id)).state
            if state is PaymentState.PAID:
                return CloseAnswer(CloseStatus.ALREADY_PAID, self._why(code, answer))
            if state is PaymentState.CLOSED:
                return CloseAnswer(CloseStatus.CLOSED, self._why(code, answer))
        return CloseAnswer(CloseStatus.UNKNOWN, self._why(code, answer))
