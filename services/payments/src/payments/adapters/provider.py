"""SimulatedProvider: the development payment provider's refund API, with injectable failures and timeouts."""

import asyncio
import hashlib
import uuid

from payments.ports import RefundAnswer


def _bucket(key: str, salt: str) -> float:
    return int.from_bytes(hashlib.sha256(f"{salt}:{key}".encode()).digest()[:8], "big") / 2**64


class SimulatedProvider:
    """Idempotent by key like a real provider; `failure_share` of refunds fail, `timeout_share` of first
    requests time out (the refund still happens, so a query finds it)."""

    def __init__(self, failure_share: float = 0.0, timeout_share: float = 0.0, latency_s: float = 0.005) -> None:
        self.failure_share = failure_share
        self.timeout_share = timeout_share
        self.latency_s = latency_s
        self._done: dict[str, RefundAnswer] = {}

    async def refund(self, provider: str, provider_txn_id: str, amount: int, currency: str, key: str) -> RefundAnswer:
        await asyncio.sleep(self.latency_s)
        if key not in self._done:
            if _bucket(key, "fail") < self.failure_share:
                self._done[key] = RefundAnswer("failed", reason="provider declined the refund")
            else:
                self._done[key] = RefundAnswer("succeeded", refund_id=f"rf_{uuid.uuid4().hex[:12]}")
            if _bucket(key, "timeout") < self.timeout_share:
                return RefundAnswer("unknown", reason="timed out")
        return self._done[key]

    async def query(self, provider: str, key: str) -> RefundAnswer:
        await asyncio.sleep(self.latency_s)
        return self._done.get(key, RefundAnswer("unknown", reason="no such refund"))
