"""The simulated provider's paid notice, as tests send it to payments' /v1/psp/sim/callbacks: its JSON body and the
signature header for it (signed at the moment of sending: a signature's timestamp must be fresh)."""

import json
import time
from datetime import UTC, datetime

from servicekit.signatures import sign


def paid_notice(
    order_id: str, *, amount: int = 600, currency: str = "CNY", paid_at: datetime | str | None = None
) -> bytes:
    """The body of the sim provider's notice that `order_id` was paid (its transaction id derived from the order)."""
    at = paid_at if isinstance(paid_at, str) else (paid_at or datetime.now(UTC)).isoformat()
    notice = {
        "order_id": order_id,
        "provider_txn_id": f"tx-{order_id}",
        "status": "succeeded",
        "amount": amount,
        "currency": currency,
        "paid_at": at,
    }
    return json.dumps(notice).encode()


def signed(secret: str, body: bytes) -> dict[str, str]:
    """The headers that sign `body` with the sim provider's `secret` now."""
    return {"X-Signature": sign(secret, body, int(time.time()))}
