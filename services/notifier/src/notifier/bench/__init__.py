"""Notifier benchmark: from a status change published to Kafka to the push service holding the message.

The notifier runs as its own process (`python -m notifier`) on the broker and PostgreSQL; every user has a
browser subscribed at a loopback push service in another process (notifier.bench.receiver). The benchmark
publishes OrderStatusChanged as the reconciler does and times each one until its push arrives (matched by
the push Topic, the order's collapse key). Two phases: a steady rate, for latency p50/p99, then a burst, for
deliveries per second. Figures go to a JSON report; nothing here asserts a timing.
"""

import asyncio
import base64
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from contracts.codec import encode, envelope_for
from contracts.events import OrderStatus, OrderStatusChanged
from contracts.topics import Topic
from notifier.domain import push_topic
from servicekit.kafka import KafkaPublisher, ensure_topics

TARGET_P99_MS = 100.0


@dataclass(frozen=True)
class BenchOptions:
    orders: int = 2000
    rate: float = 200.0
    burst: int = 5000
    users: int = 500
    partitions: int = 6
    out: Path = Path("artifacts/bench/notifier.json")
    profile: Path | None = None
    """Run the notifier under cProfile and write its profile here (slows it down: not for the figures)."""


@dataclass(frozen=True)
class Stack:
    """Where the benchmark runs: the broker (and its kind) and PostgreSQL."""

    bootstrap: str
    broker: str
    database_url: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def latency_summary(latencies_s: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_s)
    return {
        "count": len(ordered),
        "p50_ms": round(percentile(ordered, 50) * 1000, 2),
        "p90_ms": round(percentile(ordered, 90) * 1000, 2),
        "p99_ms": round(percentile(ordered, 99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def status_change(order_id: str, user_id: str) -> OrderStatusChanged:
    now = datetime.now(UTC)
    return OrderStatusChanged(
        order_id=order_id,
        user_id=user_id,
        status=OrderStatus.CREDITED,
        sequence=2,
        amount=600,
        currency="CNY",
        channel="alipay",
        paid_at=now,
        changed_at=now,
        credited_at=now,
    )


class Bench:
    """One run against a notifier at `notifier_url` and a receiver at `receiver_url`."""

    def __init__(
        self, stack: Stack, prefix: str, notifier_url: str, receiver_url: str, options: BenchOptions, api_key: str
    ) -> None:
        self.stack = stack
        self.prefix = prefix
        self.notifier_url = notifier_url
        self.receiver_url = receiver_url
        self.options = options
        self.http = httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {api_key}"})
        self.publisher = KafkaPublisher(
            stack.bootstrap, idempotence=stack.broker == "apache", client_id="bench", topic_prefix=prefix
        )

    async def subscribe_users(self) -> None:
        """One browser per user at the loopback push service (the keys only have to be valid)."""
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        keys = {
            "p256dh": _b64(key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)),
            "auth": _b64(b"0" * 16),
        }
        for i in range(self.options.users):
            body = {"channel": "webpush", "endpoint": f"{self.receiver_url}/push/u{i}", "keys": keys}
            response = await self.http.put(f"{self.notifier_url}/v1/users/u{i}/subscriptions", json=body)
            response.raise_for_status()

    async def arrivals(self) -> tuple[list[str], list[float]]:
        body = (await self.http.get(f"{self.receiver_url}/arrivals")).json()
        return body["topics"], body["times"]

    async def wait_for_arrivals(self, count: int, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while int((await self.http.get(f"{self.receiver_url}/arrivals/count")).text) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} pushes arrived within {timeout_s:.0f}s")
            await asyncio.sleep(0.05)

    def record(self, order_id: str, n: int) -> tuple[str, Any]:
        change = status_change(order_id, f"u{n % self.options.users}")
        return Topic.ORDERS_STATUS.qualified(self.prefix), encode(change, envelope_for(change, producer="bench"))

    async def steady(self, tag: str, count: int, rate: float) -> dict[str, Any]:
        """`count` status changes at `rate` per second; latency of each to its push."""
        await self.http.delete(f"{self.receiver_url}/arrivals")
        sent: dict[str, float] = {}
        pending: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        for i in range(count):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            order_id = f"{tag}-{i}"
            sent[push_topic(order_id)] = time.monotonic()
            task = asyncio.create_task(self.publisher.publish(*self.record(order_id, i)))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        await self.wait_for_arrivals(count)
        topics, times = await self.arrivals()
        return {
            "rate_per_s": rate,
            **latency_summary([t - sent[topic] for topic, t in zip(topics, times, strict=True)]),
        }

    async def burst(self, count: int) -> dict[str, Any]:
        """`count` status changes at once; deliveries per second from the first publish to the last push."""
        await self.http.delete(f"{self.receiver_url}/arrivals")
        records = [self.record(f"burst-{i}", i) for i in range(count)]
        started = time.monotonic()
        await self.publisher.publish_many(records)
        published_s = time.monotonic() - started
        await self.wait_for_arrivals(count)
        _, times = await self.arrivals()
        seconds = max(times) - started
        return {
            "deliveries": count,
            "publish_s": round(published_s, 3),
            "seconds": round(seconds, 3),
            "deliveries_per_s": round(count / seconds, 1),
            **{k: v for k, v in latency_summary([t - started for t in times]).items() if k != "count"},
        }

    async def run(self) -> dict[str, Any]:
        await self.publisher.start()
        try:
            await self.subscribe_users()
            await self.steady("warmup", 100, 100.0)
            latency = await self.steady("steady", self.options.orders, self.options.rate)
            throughput = await self.burst(self.options.burst)
        finally:
            await self.publisher.stop()
            await self.http.aclose()
        return {"latency": latency, "throughput": throughput}


async def breakdown(database_url: str, schema: str) -> dict[str, Any]:
    """Where the steady phase's time went, from the notifier's own rows: status change to the start of the
    consuming transaction that queued it (Kafka and the consumer loop), and from there to the delivery being
    settled (claim, encryption, the push, the settling batch: a little after the push arrived)."""
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        row = await conn.fetchrow(
            "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY"
            "  extract(epoch FROM n.created_at - (n.payload->>'changed_at')::timestamptz)) AS consumed,"
            " percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY"
            "  extract(epoch FROM d.delivered_at - n.created_at)) AS settled"
            " FROM notifications n JOIN deliveries d USING (notification_id)"
            " WHERE n.order_id LIKE 'steady-%'"
        )
    finally:
        await conn.close()
    assert row is not None
    return {
        f"{part}_{q}_ms": round(row[part][i] * 1000, 2)
        for part in ("consumed", "settled")
        for i, q in enumerate(("p50", "p99"))
    }


async def run_bench(stack: Stack, options: BenchOptions, logs: Path) -> dict[str, Any]:
    """Start the receiver and the notifier as processes on `stack`, run both phases, write the report."""
    from credited.keys import create_development_key
    from credited.stack.processes import Child, free_port, port_open, wait_for

    run_id = uuid.uuid4().hex[:8]
    prefix, receiver_port, notifier_port = f"bench{run_id}.", free_port(), free_port()
    await ensure_topics(stack.bootstrap, [t.qualified(prefix) for t in Topic], options.partitions)
    vapid_key = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value.to_bytes(32, "big")
    env = {
        **os.environ,
        "CREDITED_ENV": "development",  # no webhook secret, a database without a password
        "KAFKA_BOOTSTRAP": stack.bootstrap,
        "KAFKA_BROKER": stack.broker,
        "DATABASE_URL": stack.database_url,
        "CREDITED_TOPIC_PREFIX": prefix,
        "CREDITED_TOPIC_PARTITIONS": str(options.partitions),
        "CREDITED_LOG_LEVEL": "WARNING",
        "NOTIFIER_HTTP_PORT": str(notifier_port),
        "NOTIFIER_DB_SCHEMA": f"bench_{run_id}_notifier",
        "CREDITED_IDENTITY_SCHEMA": f"bench_{run_id}_identity",
        "NOTIFIER_WEBPUSH_ALLOWED_HOSTS": '["127.0.0.1"]',
        "NOTIFIER_WEBPUSH_ALLOW_HTTP": "true",
        "NOTIFIER_VAPID_PRIVATE_KEY": _b64(vapid_key),
    }
    api_key = await create_development_key(
        stack.database_url, logs / "dev-keys.json", schema=env["CREDITED_IDENTITY_SCHEMA"]
    )
    receiver_argv = [sys.executable, "-m", "notifier.bench.receiver", "--port", str(receiver_port)]
    receiver = Child("push-receiver", receiver_argv, log_path=logs / "receiver.log")
    notifier = Child(
        "notifier",
        [
            sys.executable,
            *(["-m", "cProfile", "-o", str(options.profile)] if options.profile else []),
            "-m",
            "notifier",
        ],
        env=env,
        log_path=logs / "notifier.log",
    )
    receiver.start()
    notifier.start()
    try:
        await asyncio.to_thread(
            wait_for, lambda: port_open(receiver_port), timeout_s=30, what="the push receiver", child=receiver
        )
        # Ready, not only listening: a subscription before its migrations ran would answer 500.
        await asyncio.to_thread(
            wait_for,
            lambda: _ready(f"http://127.0.0.1:{notifier_port}"),
            timeout_s=60,
            what="the notifier",
            child=notifier,
        )
        urls = f"http://127.0.0.1:{notifier_port}", f"http://127.0.0.1:{receiver_port}"
        bench = Bench(stack, prefix, *urls, options, api_key)
        figures = await bench.run()
        figures["latency"]["breakdown"] = await breakdown(stack.database_url, env["NOTIFIER_DB_SCHEMA"])
    finally:
        notifier.stop()
        receiver.stop()
    report = {
        "benchmark": "notifier: status change published -> Web Push delivered at a loopback push service",
        "broker": stack.broker,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "cpus": os.cpu_count(),
        "target_p99_ms": TARGET_P99_MS,
        "within_target": figures["latency"]["p99_ms"] <= TARGET_P99_MS,
        **figures,
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return report


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
