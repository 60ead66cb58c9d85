"""SimulatedProvider: the development provider, in credited's own callback format (JSON signed in
`X-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`), with refunds kept in memory by
SimulatedRefunds and its fault knobs (PAYMENTS_SIM_REFUND_FAILURE_SHARE, _TIMEOUT_SHARE)."""

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

import orjson
from pydantic import ValidationError

from payments.callbacks import CallbackBody
from payments.domain import (
    CallbackAck,
    CallbackRejected,
    CloseAnswer,
    CloseStatus,
    PaymentNotice,
    PaymentQuery,
    PaymentState,
    ProviderReply,
    RefundAnswer,
    RefundRequest,
    VerifiedCallback,
)
from servicekit.http import error_body
from servicekit.signatures import SignatureError, verify

_JSON = "application/json"


def _bucket(key: str, salt: str) -> float:
    return int.from_bytes(hashlib.sha256(f"{salt}:{key}".encode()).digest()[:8], "big") / 2**64


class SimulatedRefunds:
    """The development provider's refund book: idempotent by our refund id like a real provider's;
    `failure_share` of refunds are declined, `timeout_share` of first requests lose their answer (the
    refund still happens, so a query finds it). Which ones is fixed by the refund id."""

    def __init__(self, failure_share: float = 0.0, timeout_share: float = 0.0, latency_s: float = 0.005) -> None:
        self.failure_share = failure_share
        self.timeout_share = timeout_share
        self.latency_s = latency_s
        self.done: dict[str, RefundAnswer] = {}

    async def refund(self, request: RefundRequest) -> RefundAnswer:
        await asyncio.sleep(self.latency_s)
        key = request.refund_id
        if key not in self.done:
            if _bucket(key, "fail") < self.failure_share:
                self.done[key] = RefundAnswer("failed", reason="provider declined the refund")
            else:
                self.done[key] = RefundAnswer("succeeded", refund_id=f"rf_{uuid.uuid4().hex[:12]}")
            if _bucket(key, "timeout") < self.timeout_share:
                return RefundAnswer("unknown", reason="timed out")
        return self.done[key]

    async def query(self, refund_id: str) -> RefundAnswer:
        await asyncio.sleep(self.latency_s)
        return self.done.get(refund_id, RefundAnswer("unknown", reason="no such refund"))


class SimulatedProvider:
    """Any provider configured by an HMAC secret (PAYMENTS_PSP_SECRET_<NAME>) speaks this format.

    It has no payment records of its own: a query knows the payments whose callbacks it verified in this
    process and the orders it closed, and says "pending" for any other. Refunds go to `refunds`, whose
    failure and timeout shares are the development fault knobs."""

    def __init__(
        self,
        name: str,
        secrets: Sequence[str],
        refunds: SimulatedRefunds,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._name = name
        self._secrets = list(secrets)
        self._refunds = refunds
        self._clock = clock
        self._seen: dict[str, PaymentNotice] = {}
        self._closed: set[str] = set()

    @property
    def name(self) -> str:
        return self._name

    async def verify_callback(self, body: bytes, headers: Mapping[str, str]) -> VerifiedCallback:
        signature = next((v for k, v in headers.items() if k.lower() == "x-signature"), None)
        try:
            verify(signature, body, self._secrets, self._clock())
        except SignatureError as exc:
            raise CallbackRejected(401, exc.code, exc.detail) from None
        try:
            parsed = CallbackBody.model_validate_json(body)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            raise CallbackRejected(422, "invalid_callback", problems[:500]) from None
        notice = PaymentNotice(
            order_id=parsed.order_id,
            provider=self._name,
            provider_txn_id=parsed.provider_txn_id,
            succeeded=parsed.status == "succeeded",
            amount=parsed.amount,
            currency=parsed.currency,
            paid_at=parsed.paid_at,
        )
        if notice.succeeded:
            self._seen.setdefault(notice.order_id, notice)
        return VerifiedCallback(self._name, parsed.status, parsed.order_id, notice)

    def reply(self, ack: CallbackAck) -> ProviderReply:
        if ack.accepted:
            body = {"result": ack.code, "order_id": ack.order_id, "detail": ack.detail}
            return ProviderReply(ack.status_code, _JSON, orjson.dumps(body))
        return ProviderReply(ack.status_code, _JSON, orjson.dumps(error_body(ack.code, ack.detail)))

    async def query_payment(self, order_id: str) -> PaymentQuery:
        seen = self._seen.get(order_id)
        if seen is not None:
            return PaymentQuery(
                PaymentState.PAID, order_id, self._name, seen.provider_txn_id, seen.amount, seen.currency, seen.paid_at
            )
        if order_id in self._closed:
            return PaymentQuery(PaymentState.CLOSED, order_id, self._name)
        return PaymentQuery(PaymentState.PENDING, order_id, self._name, reason="no verified callback for it here")

    async def refund(self, request: RefundRequest) -> RefundAnswer:
        return await self._refunds.refund(request)

    async def query_refund(self, order_id: str, refund_id: str) -> RefundAnswer:
        return await self._refunds.query(refund_id)

    async def close(self, order_id: str) -> CloseAnswer:
        if order_id in self._seen:
            return CloseAnswer(CloseStatus.ALREADY_PAID, "a verified callback said it was paid")
        self._closed.add(order_id)
        return CloseAnswer(CloseStatus.CLOSED)

    async def aclose(self) -> None:
        """Nothing to release: the simulated provider holds no connection."""
