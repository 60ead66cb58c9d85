"""The local provider speaking Alipay's open API: asynchronous notifications (form-encoded, RSA2-signed
with Alipay's key over the sorted parameters without sign and sign_type, answered `success`), and the
gateway (alipay.trade.query, .refund, .fastpay.refund.query, .close) taking RSA2-signed requests from
the app's key and answering JSON whose `<method>_response` text is signed with Alipay's key."""

import base64
import json
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from credited.providers.book import Book, BookError, Trade, TradeState
from credited.providers.faults import Fault, Faults, Operation
from credited.providers.keys import LocalKeys, sign
from credited.providers.notifier import Answer, Notification

PROVIDER = "alipay"
CHINA = timezone(timedelta(hours=8))
_OPERATIONS = {
    "alipay.trade.query": Operation.QUERY,
    "alipay.trade.refund": Operation.REFUND,
    "alipay.trade.fastpay.refund.query": Operation.REFUND_QUERY,
    "alipay.trade.close": Operation.CLOSE,
}


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def fen(text: str) -> int:
    """Fen in a yuan string the gateway accepts: digits, at most two decimals."""
    whole, _, fraction = text.partition(".")
    if not whole.isascii() or not whole.isdigit() or len(fraction) > 2 or (fraction and not fraction.isdigit()):
        raise ValueError(f"not a yuan amount: {text!r}")
    return int(whole) * 100 + int(fraction.ljust(2, "0"))


def china_time(moment: datetime | float) -> str:
    when = datetime.fromtimestamp(moment, CHINA) if isinstance(moment, float | int) else moment.astimezone(CHINA)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def content(params: Mapping[str, str], leave_out: frozenset[str]) -> bytes:
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in leave_out and v != "").encode()


def accepted(answer: Answer) -> bool:
    """Alipay takes exactly `success` as "received"; anything else is sent again."""
    return answer.text.strip() == "success"


def _status(trade: Trade) -> str:
    return {
        TradeState.WAITING: "WAIT_BUYER_PAY",
        TradeState.PAID: "TRADE_SUCCESS",
        TradeState.CLOSED: "TRADE_CLOSED",
    }[trade.state]


def _priced_in(trade: Trade) -> str:
    """Alipay's trans_currency of a trade: its currency when not CNY, which Alipay leaves unsaid."""
    return "" if trade.currency == "CNY" else trade.currency


class AlipayServer:
    """Alipay's side of one app (the keys' app_id and seller_id)."""

    def __init__(self, keys: LocalKeys, book: Book, faults: Faults, clock: Callable[[], float] = time.time):
        self.keys = keys
        self.book = book
        self.faults = faults
        self.clock = clock

    def notification(self, trade: Trade, notify_time: float | None = None) -> Notification:
        """The signed trade_status_sync notification of a trade's current state."""
        params = {
            "notify_time": china_time(self.clock() if notify_time is None else notify_time),
            "notify_type": "trade_status_sync",
            "notify_id": secrets.token_hex(16),
            "charset": "utf-8",
            "version": "1.0",
            "app_id": self.keys.alipay_app_id,
            "auth_app_id": self.keys.alipay_app_id,
            "seller_id": self.keys.alipay_seller_id,
            "buyer_id": "2088102122524333",
            "out_trade_no": trade.trade_no,
            "trade_no": trade.txn_id,
            "trade_status": _status(trade),
            "total_amount": yuan(trade.amount),
            "trans_currency": _priced_in(trade),
            "receipt_amount": yuan(trade.amount),
            "buyer_pay_amount": yuan(trade.amount),
            "subject": "credited top-up",
            "gmt_create": china_time(trade.created_at),
        }
        if trade.paid_at is not None:
            params["gmt_payment"] = china_time(trade.paid_at)
        params = {k: v for k, v in params.items() if v}
        params["sign"] = sign(self.keys.alipay_key, content(params, frozenset({"sign", "sign_type"})))
        params["sign_type"] = "RSA2"
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        return Notification(PROVIDER, trade.trade_no, urlencode(params).encode(), headers, accepted)

    def _answer(self, method: str, answer: dict[str, Any]) -> Response:
        name = method.replace(".", "_") + "_response"
        part = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
        signature = sign(self.keys.alipay_key, part.encode())
        text = f'{{"{name}":{part},"sign":"{signature}"}}'
        return Response(text.encode(), 200, media_type="application/json;charset=utf-8")

    def _failure(self, method: str, code: str, sub_code: str, sub_msg: str) -> Response:
        messages = {"20000": "Service Currently Unavailable", "40002": "Invalid Arguments", "40004": "Business Failed"}
        return self._answer(method, {"code": code, "msg": messages[code], "sub_code": sub_code, "sub_msg": sub_msg})

    def _unsigned(self, params: Mapping[str, str]) -> str | None:
        """Why the request's signature does not hold, or None when the app signed it."""
        if params.get("app_id") != self.keys.alipay_app_id or params.get("sign_type") != "RSA2":
            return "unknown app_id, or sign_type is not RSA2"
        try:
            self.keys.alipay_app_key.public_key().verify(
                base64.b64decode(params.get("sign", "")),
                content(params, frozenset({"sign"})),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, ValueError):
            return "sign does not match the app's public key"
        return None

    async def gateway(self, request: Request) -> Response:
        params = dict(request.query_params)
        if request.method == "POST":
            params |= dict(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))
        method = params.get("method", "")
        operation = _OPERATIONS.get(method)
        if operation is None:
            return self._failure("error", "40002", "isv.invalid-method", f"unsupported method {method[:60]}")
        problem = self._unsigned(params)
        if problem is not None:
            return self._failure(method, "40002", "isv.invalid-signature", problem)
        fault = self.faults.draw(operation)
        if fault is Fault.FAIL:
            return self._failure(method, "20000", "isp.unknown-error", "injected failure")
        biz = json.loads(params.get("biz_content") or "{}")
        response: Response = {
            Operation.QUERY: self._query,
            Operation.REFUND: self._refund,
            Operation.REFUND_QUERY: self._refund_query,
            Operation.CLOSE: self._close,
        }[operation](method, biz)
        if fault is Fault.TIMEOUT:
            await self.faults.hang()
        return response

    def _trade(self, biz: Mapping[str, Any]) -> Trade | None:
        trade = self.book.get(PROVIDER, str(biz.get("out_trade_no", "")))
        if trade is None and biz.get("trade_no"):
            trade = next((t for t in self.book.trades.values() if t.txn_id == biz["trade_no"]), None)
        return trade

    def _query(self, method: str, biz: Mapping[str, Any]) -> Response:
        trade = self._trade(biz)
        if trade is None:
            return self._failure(method, "40004", "ACQ.TRADE_NOT_EXIST", "交易不存在")
        answer = {
            "code": "10000",
            "msg": "Success",
            "out_trade_no": trade.trade_no,
            "trade_status": _status(trade),
            "total_amount": yuan(trade.amount),
        }
        if _priced_in(trade):
            answer["trans_currency"] = _priced_in(trade)
        if trade.paid_at is not None:
            answer |= {"trade_no": trade.txn_id, "send_pay_date": china_time(trade.paid_at)}
            answer |= {"buyer_pay_amount": yuan(trade.amount), "receipt_amount": yuan(trade.amount)}
        return self._answer(method, answer)

    def _refund(self, method: str, biz: Mapping[str, Any]) -> Response:
        trade = self._trade(biz)
        if trade is None:
            return self._failure(method, "40004", "ACQ.TRADE_NOT_EXIST", "交易不存在")
        try:
            amount = fen(str(biz.get("refund_amount", "")))
            refund_no = str(biz.get("out_request_no") or trade.trade_no)
            _, refund, new = self.book.refund(PROVIDER, trade.trade_no, refund_no, amount)
        except ValueError as exc:
            return self._failure(method, "40004", "ACQ.INVALID_PARAMETER", str(exc))
        except BookError as exc:
            sub = {"not_paid": "ACQ.TRADE_STATUS_ERROR", "too_much": "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"}
            return self._failure(method, "40004", sub.get(exc.code, "ACQ.INVALID_PARAMETER"), exc.detail)
        return self._answer(
            method,
            {
                "code": "10000",
                "msg": "Success",
                "trade_no": trade.txn_id,
                "out_trade_no": trade.trade_no,
                "fund_change": "Y" if new else "N",
                "refund_fee": yuan(trade.refunded),
                "gmt_refund_pay": china_time(refund.created_at),
            },
        )

    def _refund_query(self, method: str, biz: Mapping[str, Any]) -> Response:
        trade = self._trade(biz)
        refund = None if trade is None else trade.refunds.get(str(biz.get("out_request_no", "")))
        if trade is None or refund is None:  # Alipay answers "success" with no refund in it
            return self._answer(method, {"code": "10000", "msg": "Success"})
        return self._answer(
            method,
            {
                "code": "10000",
                "msg": "Success",
                "trade_no": trade.txn_id,
                "out_trade_no": trade.trade_no,
                "out_request_no": refund.refund_no,
                "total_amount": yuan(trade.amount),
                "refund_amount": yuan(refund.amount),
                "refund_status": "REFUND_SUCCESS",
                "gmt_refund_pay": china_time(refund.created_at),
            },
        )

    def _close(self, method: str, biz: Mapping[str, Any]) -> Response:
        trade = self._trade(biz)
        if trade is None:
            return self._failure(method, "40004", "ACQ.TRADE_NOT_EXIST", "交易不存在")
        try:
            self.book.close(PROVIDER, trade.trade_no)
        except BookError as exc:
            return self._failure(method, "40004", "ACQ.TRADE_STATUS_ERROR", exc.detail)
        if trade.paid_at is not None:
            return self._failure(method, "40004", "ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        return self._answer(method, {"code": "10000", "msg": "Success", "out_trade_no": trade.trade_no})

    def routes(self) -> list[Route]:
        return [Route("/gateway.do", self.gateway, methods=["GET", "POST"])]
