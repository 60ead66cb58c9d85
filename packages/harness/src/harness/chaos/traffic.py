"""Traffic that behaves like a platform backend and a payment provider during an outage: an order request is
repeated with its Idempotency-Key, and a payment notification is sent again, freshly signed, until payments
acknowledges it (providers retry for hours; the run gives up after `give_up_s`). Every refused or failed
request is kept with the second it happened, to see which faults made payments unavailable."""

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from servicekit.signatures import sign

CHANNELS = ("alipay", "wechat", "card", "carrier")
AMOUNTS = (100, 600, 3000, 6800, 12800, 32800, 64800)


@dataclass
class Ledger:
    """What the traffic did: the ground truth the history is checked against."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    paid: set[str] = field(default_factory=set)
    failed_requests: list[tuple[float, str]] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)


class Traffic:
    def __init__(self, payments_url: str, psp_secret: str, client: httpx.AsyncClient, *, give_up_s: float) -> None:
        self.url = payments_url.rstrip("/")
        self.secret = psp_secret
        self.client = client
        self.give_up_s = give_up_s
        self.started = time.monotonic()

    async def _until_accepted(self, what: str, truth: Ledger, send: Any) -> httpx.Response | None:
        """Send until a 2xx; a 4xx other than 409/429 is an answer too (kept as a failure); give up late."""
        deadline = time.monotonic() + self.give_up_s
        delay = 0.2
        while True:
            try:
                response: httpx.Response = await send()
                if response.status_code < 300:
                    return response
                reason = f"{what}: {response.status_code} {response.text[:120]}"
                if 400 <= response.status_code < 500 and response.status_code not in (408, 409, 429):
                    truth.failed_requests.append((self._now(), reason))
                    return None
            except httpx.HTTPError as exc:
                reason = f"{what}: {type(exc).__name__}"
            truth.failed_requests.append((self._now(), reason))
            if time.monotonic() + delay > deadline:
                truth.gave_up.append(reason)
                return None
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not crypto
            delay = min(delay * 2, 5.0)

    def _now(self) -> float:
        return round(time.monotonic() - self.started, 2)

    async def order_and_pay(self, truth: Ledger, i: int, users: int, rng: random.Random) -> None:
        user_id = f"chaos-{truth.run_id}-{i % users}"
        amount, channel = rng.choice(AMOUNTS), rng.choice(CHANNELS)
        key = f"chaos-{truth.run_id}-{i}"
        body = {"user_id": user_id, "amount": amount, "currency": "CNY", "channel": channel}
        created = await self._until_accepted(
            "create order",
            truth,
            lambda: self.client.post(f"{self.url}/v1/orders", json=body, headers={"Idempotency-Key": key}),
        )
        if created is None:
            return
        order_id = created.json()["order_id"]
        truth.orders[order_id] = {"user_id": user_id, "amount": amount, "channel": channel}
        paid_at = datetime.now(UTC)
        notice = orjson.dumps(
            {
                "order_id": order_id,
                "provider_txn_id": f"chaos-{uuid.uuid4().hex[:16]}",
                "status": "succeeded",
                "amount": amount,
                "currency": "CNY",
                "paid_at": paid_at.isoformat(),
            }
        )

        def callback() -> Any:
            headers = {"content-type": "application/json", "x-signature": sign(self.secret, notice, int(time.time()))}
            return self.client.post(f"{self.url}/v1/psp/sim/callbacks", content=notice, headers=headers)

        if await self._until_accepted(f"callback {order_id}", truth, callback) is not None:
            truth.paid.add(order_id)
            truth.orders[order_id]["paid_at"] = paid_at.timestamp()

    async def drive(self, truth: Ledger, orders: int, rate: float, concurrency: int = 200) -> None:
        gate = asyncio.Semaphore(concurrency)
        rng = random.Random(truth.run_id)  # noqa: S311 - reproducible traffic
        users = max(1, orders // 5)
        start = time.monotonic()

        async def one(i: int) -> None:
            async with gate:
                await self.order_and_pay(truth, i, users, rng)

        async with asyncio.TaskGroup() as group:
            for i in range(orders):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                group.create_task(one(i))
