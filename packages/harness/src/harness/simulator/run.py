"""Drives users and the payment providers against payments' HTTP API, then scores the run. Orders on the
`wechat` and `alipay` channels are paid at the local provider when the stack runs one (it notifies payments
in WeChat Pay's and Alipay's protocols, or drops the notification); the others through the `sim` provider's
JSON callbacks, sent by the simulator itself."""

import asyncio
import contextlib
import logging
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from harness.simulator.receiver import Received
from harness.simulator.story import recovered
from servicekit.signatures import sign

log = logging.getLogger(__name__)

CHANNELS = ("alipay", "wechat", "card", "carrier")
PROVIDER = "sim"
LOCAL_PROVIDERS = {"wechat": "wechatpay", "alipay": "alipay"}
"""The channels the local provider takes payments for, and its protocol for each."""


def trade_no(provider: str, order_id: str) -> str:
    """The merchant trade number an order has at the provider (WeChat Pay's 32 characters leave out `ord_`)."""
    return order_id.removeprefix("ord_") if provider == "wechatpay" else order_id


def order_of(provider: str, trade: str) -> str:
    """The order id of a merchant trade number (see trade_no)."""
    return f"ord_{trade}" if provider == "wechatpay" else trade


@dataclass(frozen=True)
class Load:
    orders: int = 100
    rate: float = 100.0
    duplicate_share: float = 0.1
    users: int = 0
    concurrency: int = 200


@dataclass
class Truth:
    """What the simulator did: the ground truth a run is scored against."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    paid: set[str] = field(default_factory=set)
    duplicate_callbacks: int = 0
    errors: list[str] = field(default_factory=list)
    at_provider: set[str] = field(default_factory=set)
    """Orders paid at the local provider, which notifies payments itself."""
    callback_dropped: set[str] = field(default_factory=set)
    """Of those, the ones whose notification the provider dropped, as it answered the payment."""


class Simulator:
    provider_url: str | None = None
    """The local provider's base URL: orders of its channels are paid there (None: all through `sim`)."""

    def __init__(self, payments_url: str, psp_secret: str, client: httpx.AsyncClient) -> None:
        self.payments_url = payments_url.rstrip("/")
        self.psp_secret = psp_secret
        self.client = client

    async def _post(self, url: str, **kwargs: Any) -> httpx.Response:
        """POST, retrying a request the connection lost: safe because order creation carries an
        Idempotency-Key and callbacks are applied once, as a platform backend and a provider rely on."""
        for attempt in range(1, 4):
            try:
                return await self.client.post(url, **kwargs)
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError, httpx.WriteError):
                if attempt == 3:
                    raise
                await asyncio.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    async def order_and_pay(self, truth: Truth, user_id: str, amount: int, duplicate: bool) -> None:
        channel = random.choice(CHANNELS)  # noqa: S311 - simulation
        response = await self._post(
            f"{self.payments_url}/v1/orders",
            json={"user_id": user_id, "amount": amount, "currency": "CNY", "channel": channel},
            headers={"Idempotency-Key": f"sim-{uuid.uuid4().hex}"},
        )
        if response.status_code not in (200, 201):
            truth.errors.append(f"create order: {response.status_code} {response.text[:200]}")
            return
        order_id = response.json()["order_id"]
        truth.orders[order_id] = {"user_id": user_id, "amount": amount, "channel": channel}
        if self.provider_url is not None and channel in LOCAL_PROVIDERS:
            await self._pay_at_provider(truth, order_id, LOCAL_PROVIDERS[channel], amount)
            return
        paid_at = datetime.now(UTC)
        body = orjson.dumps(
            {
                "order_id": order_id,
                "provider_txn_id": f"sim-{uuid.uuid4().hex[:16]}",
                "status": "succeeded",
                "amount": amount,
                "currency": "CNY",
                "paid_at": paid_at.isoformat(),
            }
        )
        sends = 2 if duplicate else 1
        results = await asyncio.gather(*(self._callback(body) for _ in range(sends)))
        if any(r == 200 for r in results):
            truth.paid.add(order_id)
            truth.orders[order_id]["paid_at"] = paid_at.timestamp()
            truth.duplicate_callbacks += sends - 1
        else:
            truth.errors.append(f"callback for {order_id}: {results}")

    async def _pay_at_provider(self, truth: Truth, order_id: str, provider: str, amount: int) -> None:
        """The user pays at the local provider, which sends payments its signed notification (or drops it)."""
        body = {"provider": provider, "trade_no": trade_no(provider, order_id), "amount": amount, "currency": "CNY"}
        response = await self._post(f"{self.provider_url}/dev/trades", json=body)
        if response.status_code != 200:
            truth.errors.append(f"pay {order_id} at {provider}: {response.status_code} {response.text[:200]}")
            return
        truth.paid.add(order_id)
        truth.at_provider.add(order_id)
        # The payment's time as the provider states it (whole seconds), from which the order's deadline runs.
        truth.orders[order_id]["paid_at"] = datetime.fromisoformat(response.json()["paid_at"]).timestamp()
        if response.json()["dropped"]:
            truth.callback_dropped.add(order_id)

    async def _callback(self, body: bytes) -> int:
        headers = {"content-type": "application/json", "x-signature": sign(self.psp_secret, body, int(time.time()))}
        response = await self._post(f"{self.payments_url}/v1/psp/{PROVIDER}/callbacks", content=body, headers=headers)
        return response.status_code

    async def drive(self, load: Load, truth: Truth, progress: Callable[[], None] = lambda: None) -> None:
        """Create and pay `load.orders` orders at `load.rate` per second."""
        users = load.users or max(1, load.orders // 5)
        gate = asyncio.Semaphore(load.concurrency)
        rng = random.Random(truth.run_id)  # noqa: S311 - reproducible simulation, not crypto
        start = time.monotonic()

        async def one(i: int) -> None:
            async with gate:
                try:
                    await self.order_and_pay(
                        truth,
                        f"sim-{truth.run_id}-{i % users}",
                        rng.choice((100, 600, 3000, 6800, 12800, 32800, 64800)),
                        rng.random() < load.duplicate_share,
                    )
                except httpx.HTTPError as exc:
                    truth.errors.append(f"order {i}: {exc!r}")
                progress()

        async with asyncio.TaskGroup() as group:  # cancelling the drive cancels every order in flight
            for i in range(load.orders):
                delay = start + i / load.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                group.create_task(one(i))


FINAL = {"credited", "refunded", "needs_support"}


def settled(truth: Truth, received: Received) -> int:
    """How many paid orders have reached a final status at the webhook."""
    finals = {p["order_id"] for p in received.payloads.values() if p["status"] in FINAL}
    return len(truth.paid & finals)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def partition_count(bootstrap: str, topic: str) -> int:
    """How many partitions `topic` has (a group-less consumer knows no metadata of unassigned topics)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        return len(described[0]["partitions"])
    finally:
        await admin.close()


async def credit_publication_times(bootstrap: str, topic: str) -> dict[str, float]:
    """When each order's first CreditPosted reached the broker (record timestamps, unix seconds): the moment
    the credit became visible to the reconciler, which is what a false alarm is judged against."""
    partitions = [TopicPartition(topic, p) for p in range(await partition_count(bootstrap, topic))]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        seen: dict[str, float] = {}

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in partitions])

        while await behind():
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    if dict(r.headers).get("event_type") == b"CreditPosted" and r.key:
                        oid = r.key.decode()
                        seen[oid] = min(seen.get(oid, r.timestamp / 1000), r.timestamp / 1000)
        return seen
    finally:
        await consumer.stop()


READS_AT_ONCE = 32
"""The ledger reads scoring keeps in flight."""

Reads = Callable[[str], Awaitable[Any]]
"""GET a URL and parse its JSON answer: how scoring reads the ledger's books, one order or wallet at a time."""


def reads_with(client: httpx.AsyncClient) -> Reads:
    """Reads through `client` (a test's fake ledger is an httpx transport)."""

    async def get(url: str) -> Any:
        return (await client.get(url)).json()

    return get


@contextlib.asynccontextmanager
async def fast_reads(headers: Mapping[str, str]) -> AsyncIterator[Reads]:
    """Reads over aiohttp sending `headers`, for scoring thousands of orders on the cores the stack runs on: a read
    cost this process 1.5-1.8 ms of CPU through httpx (httpcore 1.0's pool polls every idle connection at every
    request) and 0.16 ms through aiohttp, which also read 3.6 times as many a second (4,000 reads, 32 at once)."""
    connector = aiohttp.TCPConnector(limit=READS_AT_ONCE)
    async with aiohttp.ClientSession(
        headers=dict(headers), connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:

        async def get(url: str) -> Any:
            async with session.get(url) as response:
                response.raise_for_status()
                return orjson.loads(await response.read())

        yield get


async def score(
    truth: Truth,
    received: Received,
    *,
    ledger_url: str,
    client: httpx.AsyncClient,
    elapsed_s: float,
    threshold_s: float,
    credit_visible_at: dict[str, float] | None = None,
    retried_at: Mapping[str, float] | None = None,
    recovered_by_query: int | None = None,
    reads: Reads | None = None,
) -> dict[str, Any]:
    """The run's figures: every count is checked against the ground truth, not taken from the services.
    `retried_at`: when each order's first RetryCredit reached the broker (read there, see simulator.tail);
    `recovered_by_query`: payments' own count of payments it found by asking the provider, reported beside
    the orders whose notification the provider dropped and what became of them; `reads`: how the ledger's books are
    read order by order (`fast_reads`; through `client` if not given)."""
    by_order = received.by_order()
    notified = received.of_orders(truth.orders)  # the bench's steps share one receiver: this run's orders only
    statuses = {oid: {p["status"] for p in by_order.get(oid, [])} for oid in truth.paid}
    dropped = set((await client.get(f"{ledger_url}/v1/faults")).json()["credit_dropped"]) & truth.paid
    get = reads or reads_with(client)
    credits = await _credits(get, ledger_url, sorted(truth.paid))
    credit_counts = {oid: len(times) for oid, times in credits.items()}
    wallets = await _balance_mismatches(get, ledger_url, truth, credit_counts)
    flagged = {oid for oid, s in statuses.items() if "delayed" in s}
    first_credit = {oid: min(times) for oid, times in credits.items() if times}
    latencies = []
    detection = []
    for oid in truth.paid:
        for p in by_order.get(oid, []):
            if p["status"] == "credited" and p.get("credited_at"):
                latencies.append(datetime.fromisoformat(p["credited_at"]).timestamp() - truth.orders[oid]["paid_at"])
            if p["status"] == "delayed":
                detection.append(
                    datetime.fromisoformat(p["changed_at"]).timestamp() - (truth.orders[oid]["paid_at"] + threshold_s)
                )
    refunded = {oid for oid, s in statuses.items() if "refunded" in s}
    credited = {oid for oid, n in credit_counts.items() if n >= 1}
    deadline = {oid: truth.orders[oid]["paid_at"] + threshold_s for oid in flagged}
    return {
        "orders": len(truth.orders),
        "paid": len(truth.paid),
        "credited": len(credited),
        "credited_notified": sum(1 for s in statuses.values() if "credited" in s),
        "refunded": len(refunded),
        # Paid and neither credited nor refunded; credited and refunded both (the user paid back and kept the
        # currency): with one of each, credited + refunded still equals paid.
        "lost": len(truth.paid - credited - refunded),
        "credited_and_refunded": len(credited & refunded),
        "credited_twice": sum(1 for n in credit_counts.values() if n > 1),
        "balance_mismatches": wallets,
        "credits_dropped": len(dropped),
        "flagged_overdue": len(flagged),
        # A false alarm: flagged before the order's deadline, or although the credit was on the broker before it
        # (without broker timestamps: posted in the ledger's books before it).
        "false_flags": sum(
            1
            for oid in flagged
            if _flagged_at(by_order[oid]) < deadline[oid]
            or _credit_seen_at(oid, credits, credit_visible_at) <= deadline[oid]
        ),
        # Flagged with no fault behind it: neither its credit nor its payment's notification was dropped (an
        # order whose notification was lost is overdue in earnest if the query found it after its deadline).
        "flagged_not_dropped": len(flagged - dropped - truth.callback_dropped),
        "retried": len(truth.paid & (retried_at or {}).keys()),
        "recovered": len(recovered(flagged, first_credit, retried_at or {})),
        "missed_overdue": len(dropped - flagged),
        "notifications_sent": notified[0],
        "duplicate_notifications": notified[1],
        "duplicate_callbacks": truth.duplicate_callbacks,
        "pay_to_credit_p50_s": _round(percentile(latencies, 50)),
        "pay_to_credit_p99_s": _round(percentile(latencies, 99)),
        "detection_latency_p50_s": _round(percentile(detection, 50)),
        "detection_latency_p99_s": _round(percentile(detection, 99)),
        "detection_latency_max_s": _round(max(detection, default=None)),
        "detection_latency_min_s": _round(min(detection, default=None)),  # below 0: flagged before the deadline
        **_callback_loss(truth, flagged, dropped, first_credit, recovered_by_query),
        "errors": len(truth.errors),
        "elapsed_s": round(elapsed_s, 2),
    }


def _callback_loss(
    truth: Truth,
    flagged: set[str],
    credit_dropped: set[str],
    first_credit: Mapping[str, float],
    recovered_by_query: int | None,
) -> dict[str, Any]:
    """The orders paid at the local provider whose notification it dropped: how many payments found by query
    (its own count), how many of them were credited, and, of those whose credit the ledger did not drop too
    (those wait for the retry), how long after payment and how many flagged overdue because the query came
    after their deadline."""
    lost = truth.callback_dropped
    only_lost = lost - credit_dropped
    waits = [first_credit[oid] - truth.orders[oid]["paid_at"] for oid in only_lost if oid in first_credit]
    return {
        "paid_at_provider": len(truth.at_provider),
        "callbacks_dropped": len(lost),
        "recovered_by_query": recovered_by_query,
        "callback_dropped_credited": sum(1 for oid in lost if oid in first_credit),
        "callback_dropped_credit_p50_s": _round(percentile(waits, 50)),
        "callback_dropped_credit_max_s": _round(max(waits, default=None)),
        "callback_dropped_flagged": len(only_lost & flagged),
    }


def _flagged_at(notifications: list[dict[str, Any]]) -> float:
    return min(datetime.fromisoformat(p["changed_at"]).timestamp() for p in notifications if p["status"] == "delayed")


def _credit_seen_at(oid: str, books: dict[str, list[float]], broker: dict[str, float] | None) -> float:
    if broker is not None:
        return broker.get(oid, float("inf"))
    return min(books[oid]) if books.get(oid) else float("inf")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


async def _credits(get: Reads, ledger_url: str, order_ids: list[str]) -> dict[str, list[float]]:
    """When each order's credits were posted, per the ledger's own books (unix seconds)."""
    gate = asyncio.Semaphore(READS_AT_ONCE)

    async def one(oid: str) -> tuple[str, list[float]]:
        async with gate:
            body = await get(f"{ledger_url}/v1/orders/{oid}/entries")
        times = [
            datetime.fromisoformat(t["created_at"]).timestamp() for t in body["transactions"] if t["kind"] == "credit"
        ]
        return oid, times

    return dict(await asyncio.gather(*(one(o) for o in order_ids)))


async def _balance_mismatches(get: Reads, ledger_url: str, truth: Truth, credit_counts: dict[str, int]) -> int:
    """Users whose wallet is not exactly the sum of their credited orders (each counted once)."""
    expected: dict[tuple[str, str], int] = {}
    for oid in truth.paid:
        order = truth.orders[oid]
        key = (order["user_id"], "CNY")
        expected[key] = expected.get(key, 0) + (order["amount"] if credit_counts.get(oid, 0) >= 1 else 0)
    gate = asyncio.Semaphore(READS_AT_ONCE)

    async def one(user: str, currency: str, expected: int) -> bool:
        async with gate:
            body = await get(f"{ledger_url}/v1/wallets/{user}")
        return int(body["balances"].get(currency, 0)) != expected

    results = await asyncio.gather(*(one(u, c, v) for (u, c), v in expected.items()))
    return sum(results)
