"""The local provider speaking WeChat Pay API v3: payment notifications (the transaction encrypted with
AEAD_AES_256_GCM under the merchant's APIv3 key, signed with the platform key), and the merchant API
(query by out_trade_no, close, refund, query refund) behind `WECHATPAY2-SHA256-RSA2048` authorization,
each answer signed with the platform key."""

import base64
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from credited.providers.book import Book, BookError, Trade, TradeState
from credited.providers.faults import Fault, Faults, Operation
from credited.providers.keys import LocalKeys, serial, sign
from credited.providers.notifier import Answer, Notification

PROVIDER = "wechatpay"
SCHEME = "WECHATPAY2-SHA256-RSA2048"
CHINA = timezone(timedelta(hours=8))
_AUTH = re.compile(r'(\w+)="([^"]*)"')


def trade_no_for(order_id: str) -> str:
    """The out_trade_no a credited order id becomes (WeChat Pay allows 32 characters: `ord_` is dropped)."""
    return order_id.removeprefix("ord_")


def _message(*parts: str | bytes) -> bytes:
    return b"".join((p.encode() if isinstance(p, str) else p) + b"\n" for p in parts)


def accepted(answer: Answer) -> bool:
    """WeChat Pay takes 200 or 204 as "received"; anything else is sent again."""
    return answer.status in (200, 204)


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(CHINA).isoformat(timespec="seconds")


class WeChatPayServer:
    """WeChat Pay's side of one merchant (the keys' mchid and appid)."""

    def __init__(self, keys: LocalKeys, book: Book, faults: Faults, clock: Callable[[], float] = time.time):
        self.keys = keys
        self.book = book
        self.faults = faults
        self.clock = clock
        self.tolerance_s = 300
        merchant = keys.merchant_certificate.public_key()
        assert isinstance(merchant, rsa.RSAPublicKey)
        self._merchant_key = merchant

    def signed_headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Wechatpay-* headers signing `body` with the platform key, as on notifications and answers."""
        stamp, nonce = str(int(self.clock()) if timestamp is None else timestamp), secrets.token_hex(16)
        return {
            "Wechatpay-Timestamp": stamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": sign(self.keys.wechat_platform_key, _message(stamp, nonce, body)),
            "Wechatpay-Serial": serial(self.keys.platform_certificate),
            "Wechatpay-Signature-Type": SCHEME,
        }

    def transaction(self, trade: Trade) -> dict[str, Any]:
        if trade.paid_at is not None and trade.refunded:
            state = "REFUND"
        else:
            state = {TradeState.WAITING: "NOTPAY", TradeState.PAID: "SUCCESS", TradeState.CLOSED: "CLOSED"}[trade.state]
        txn: dict[str, Any] = {
            "appid": self.keys.wechat_appid,
            "mchid": self.keys.mchid,
            "out_trade_no": trade.trade_no,
            "trade_type": "NATIVE",
            "trade_state": state,
            "trade_state_desc": state,
            "attach": "",
            "amount": {"total": trade.amount, "currency": trade.currency},
        }
        if trade.paid_at is not None:
            txn |= {"transaction_id": trade.txn_id, "bank_type": "OTHERS", "success_time": _time(trade.paid_at)}
            txn["payer"] = {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}
            txn["amount"] |= {"payer_total": trade.amount, "payer_currency": trade.currency}
        return txn

    def notification(self, trade: Trade, timestamp: int | None = None) -> Notification:
        """The signed TRANSACTION.SUCCESS notification of a paid trade."""
        nonce = secrets.token_hex(6)  # 12 characters: AES-GCM's 96-bit nonce
        sealed = AESGCM(self.keys.apiv3_key.encode()).encrypt(
            nonce.encode(), orjson.dumps(self.transaction(trade)), b"transaction"
        )
        envelope = {
            "id": f"EV-{secrets.token_hex(10)}",
            "create_time": _time(trade.paid_at),
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": {
                "original_type": "transaction",
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode(),
                "associated_data": "transaction",
                "nonce": nonce,
            },
        }
        body = orjson.dumps(envelope)
        headers = {"Content-Type": "application/json", **self.signed_headers(body, timestamp)}
        return Notification(PROVIDER, trade.trade_no, body, headers, accepted)

    def _answer(self, status: int, payload: dict[str, Any] | None = None) -> Response:
        body = b"" if payload is None else orjson.dumps(payload)
        return Response(body, status, headers=self.signed_headers(body), media_type="application/json")

    def _error(self, status: int, code: str, message: str) -> Response:
        return self._answer(status, {"code": code, "message": message})

    def _unauthorized(self, request: Request, body: bytes) -> str | None:
        """Why the request's Authorization does not hold, or None when the merchant signed it."""
        scheme, _, fields = request.headers.get("authorization", "").partition(" ")
        given = dict(_AUTH.findall(fields))
        if scheme != SCHEME or not {"mchid", "nonce_str", "signature", "timestamp", "serial_no"} <= given.keys():
            return f"Authorization must be {SCHEME} with mchid, nonce_str, signature, timestamp, serial_no"
        if given["mchid"] != self.keys.mchid or given["serial_no"].upper() != serial(self.keys.merchant_certificate):
            return "unknown merchant or merchant certificate"
        if not given["timestamp"].isdigit() or abs(int(given["timestamp"]) - self.clock()) > self.tolerance_s:
            return "timestamp outside the allowed window"
        # The merchant signed the path as it sent it, before any percent-decoding.
        path = (request.scope.get("raw_path") or request.url.path.encode()).decode()
        query = request.scope.get("query_string", b"").decode()
        message = _message(
            request.method, path + (f"?{query}" if query else ""), given["timestamp"], given["nonce_str"], body
        )
        try:
            self._merchant_key.verify(
                base64.b64decode(given["signature"]), message, padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, ValueError):
            return "signature does not match the merchant certificate"
        return None

    async def _serve(
        self, request: Request, operation: Operation, act: Callable[[Request, bytes], Response]
    ) -> Response:
        """Check the merchant's signature, draw a fault, act: a failure does nothing and answers 500; a
        timeout acts, then holds the answer."""
        body = await request.body()
        problem = self._unauthorized(request, body)
        if problem is not None:
            return self._error(401, "SIGN_ERROR", problem)
        fault = self.faults.draw(operation)
        if fault is Fault.FAIL:
            return self._error(500, "SYSTEM_ERROR", "injected failure")
        response = act(request, body)
        if fault is Fault.TIMEOUT:
            await self.faults.hang()
        return response

    def _query(self, request: Request, body: bytes) -> Response:
        if request.query_params.get("mchid") != self.keys.mchid:
            return self._error(400, "PARAM_ERROR", "mchid does not match")
        trade = self.book.get(PROVIDER, request.path_params["trade_no"])
        if trade is None:
            return self._error(404, "ORDER_NOT_EXIST", "订单不存在")
        return self._answer(200, self.transaction(trade))

    def _close(self, request: Request, body: bytes) -> Response:
        try:
            self.book.close(PROVIDER, request.path_params["trade_no"])
        except BookError as exc:
            code = {"paid": (400, "ORDERPAID"), "not_found": (404, "ORDER_NOT_EXIST")}[exc.code]
            return self._error(*code, exc.detail)
        return self._answer(204)

    def _refund_view(self, trade: Trade, refund_no: str) -> dict[str, Any]:
        refund = trade.refunds[refund_no]
        return {
            "refund_id": refund.refund_id,
            "out_refund_no": refund.refund_no,
            "transaction_id": trade.txn_id,
            "out_trade_no": trade.trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "success_time": _time(refund.created_at),
            "create_time": _time(refund.created_at),
            "status": "SUCCESS",
            "amount": {"total": trade.amount, "refund": refund.amount, "currency": trade.currency},
        }

    def _by_txn(self, txn_id: str) -> Trade | None:
        return next((t for t in self.book.trades.values() if t.provider == PROVIDER and t.txn_id == txn_id), None)

    def _refund(self, request: Request, body: bytes) -> Response:
        asked = orjson.loads(body)
        trade = self._by_txn(asked.get("transaction_id", "")) or self.book.get(PROVIDER, asked.get("out_trade_no", ""))
        amount = asked.get("amount") or {}
        if trade is None:
            return self._error(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        if amount.get("total") != trade.amount or amount.get("currency", "CNY") != trade.currency:
            return self._error(400, "PARAM_ERROR", "amount.total or currency does not match the order")
        try:
            self.book.refund(PROVIDER, trade.trade_no, asked.get("out_refund_no", ""), amount.get("refund", 0))
        except BookError as exc:
            return self._error(400, "INVALID_REQUEST", exc.detail)
        return self._answer(200, self._refund_view(trade, asked["out_refund_no"]))

    def _query_refund(self, request: Request, body: bytes) -> Response:
        refund_no = request.path_params["refund_no"]
        for trade in self.book.trades.values():
            if trade.provider == PROVIDER and refund_no in trade.refunds:
                return self._answer(200, self._refund_view(trade, refund_no))
        return self._error(404, "RESOURCE_NOT_EXISTS", "退款单不存在")

    def routes(self) -> list[Route]:
        def serve(operation: Operation, act: Callable[[Request, bytes], Response]) -> Callable[..., Any]:
            async def endpoint(request: Request) -> Response:
                return await self._serve(request, operation, act)

            return endpoint

        base = "/v3/pay/transactions/out-trade-no/{trade_no}"
        return [
            Route(base, serve(Operation.QUERY, self._query), methods=["GET"]),
            Route(f"{base}/close", serve(Operation.CLOSE, self._close), methods=["POST"]),
            Route("/v3/refund/domestic/refunds", serve(Operation.REFUND, self._refund), methods=["POST"]),
            Route(
                "/v3/refund/domestic/refunds/{refund_no}",
                serve(Operation.REFUND_QUERY, self._query_refund),
                methods=["GET"],
            ),
        ]
