"""A notifier running inside the test's event loop on the real broker and PostgreSQL, served on loopback,
and the status changes the reconciler would publish."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from aiokafka import ConsumerRecord
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from contracts.codec import encode, envelope_for
from contracts.events import OrderStatus, OrderStatusChanged
from contracts.topics import Topic
from credited.stack.processes import free_port
from notifier.bootstrap import Notifier, build
from notifier.config import Settings
from servicekit.http import serve
from servicekit.kafka import KafkaPublisher
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_all
from tests.notifier.push_service import b64url
from tests.service_settings import settings_for

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
_VAPID_KEY = ec.generate_private_key(ec.SECP256R1())
VAPID_PEM = _VAPID_KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
VAPID_PUBLIC_KEY = b64url(_VAPID_KEY.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
"""The application server key the notifier signs with and the push service verifies against."""


def change(
    order_id: str,
    status: OrderStatus,
    sequence: int,
    *,
    user_id: str = "u1",
    amount: int = 64800,
    eta: datetime | None = None,
) -> OrderStatusChanged:
    return OrderStatusChanged(
        order_id=order_id,
        user_id=user_id,
        status=status,
        sequence=sequence,
        amount=amount,
        currency="CNY",
        channel="alipay",
        paid_at=T0,
        changed_at=T0 + timedelta(seconds=sequence),
        credited_at=T0 + timedelta(seconds=sequence) if status is OrderStatus.CREDITED else None,
        estimated_credit_at=eta,
    )


@dataclass
class RunningNotifier:
    settings: Settings
    notifier: Notifier
    port: int
    tasks: list["asyncio.Task[None]"] = field(default_factory=list)
    api: httpx.AsyncClient = field(default_factory=httpx.AsyncClient)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_until_consumed(self, order_id: str, count: int, timeout_s: float = 60) -> None:
        async def consumed() -> bool:
            response = await self.api.get(f"{self.url}/v1/orders/{order_id}/notifications")
            return len(response.json()["notifications"]) >= count

        await eventually(consumed, timeout_s=timeout_s)

    async def settled(self) -> bool:
        """No delivery is left pending (delivered, failed or gone)."""
        return await self.notifier.infra.pool.fetchval("SELECT count(*) FROM deliveries WHERE state = 'pending'") == 0

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.api.aclose()
        await self.notifier.close()

    async def kill(self) -> None:
        """Stop as a crash would: tasks cancelled mid-delivery, database connections dropped, nothing settled."""
        self.notifier.infra.pool.terminate()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.api.aclose()
        for consumer in self.notifier.infra.consumers:
            with contextlib.suppress(Exception):
                await consumer.stop()
        with contextlib.suppress(Exception):
            await self.notifier.infra.publisher.stop()
        for poster in self.notifier.posters:
            await poster.close()


def notifier_settings(broker: Broker, database_url: str, isolation: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "vapid_private_key": VAPID_PEM,
        # The receivers below run on loopback over plain http: development mode lets the address guard
        # (servicekit.netguard) reach them, as it does for the local stack. Cloud metadata stays refused.
        "environment": "development",
        "webpush_allowed_hosts": ("127.0.0.1",),
        "webpush_allow_http": True,
        "push_timeout_s": 0.5,
        "webhook_timeout_s": 0.5,
        "base_backoff_s": 0.05,
        "max_backoff_s": 0.4,
        "max_attempts": 5,
        "sse_heartbeat_s": 2.0,
        **overrides,
    }
    return settings_for(Settings, broker, database_url, isolation, **values)


async def start_notifier(settings: Settings) -> RunningNotifier:
    notifier = await build(settings)
    port = free_port()
    for consumer in notifier.infra.consumers:
        await consumer.start()
    # Every business route needs an API key: the harness's client is a platform backend with every scope.
    running = RunningNotifier(
        settings, notifier, port, api=httpx.AsyncClient(headers=await bearer(notifier.infra.keys))
    )
    running.tasks = [
        asyncio.create_task(serve(notifier.app, "127.0.0.1", port)),
        *(asyncio.create_task(c.run()) for c in notifier.infra.consumers),
        asyncio.create_task(notifier.worker.run()),
        asyncio.create_task(notifier.feed.run()),
    ]

    async def healthy() -> bool:
        with contextlib.suppress(httpx.TransportError):
            return (await running.api.get(f"{running.url}/healthz")).status_code == 200
        return False

    await eventually(healthy, timeout_s=30, interval_s=0.05)
    await asyncio.wait_for(notifier.feed.listening.wait(), 30)
    return running


async def publish(broker: Broker, prefix: str, *changes: OrderStatusChanged, event_id: str | None = None) -> None:
    """Publish status changes as the reconciler does (an explicit event id repeats one fact)."""
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test", topic_prefix=prefix)
    await publisher.start()
    try:
        topic = Topic.ORDERS_STATUS.qualified(prefix)
        await publisher.publish_many(
            [(topic, encode(c, envelope_for(c, producer="reconciler", event_id=event_id))) for c in changes]
        )
    finally:
        await publisher.stop()


async def dead_letters(broker: Broker, prefix: str) -> list[ConsumerRecord[bytes, bytes]]:
    return [
        r
        for r in await read_all(broker.bootstrap, Topic.DEAD_LETTER.qualified(prefix))
        if dict(r.headers).get("dlq_source") == b"notifier.delivery"
    ]


def header(record: ConsumerRecord[bytes, bytes], name: str) -> str:
    return dict(record.headers)[name].decode()


async def timelines(answer: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Each `timeline` event of a server-sent event stream, as it arrives."""
    buffered = ""
    async for chunk in answer.aiter_text():
        buffered += chunk
        while "\n\n" in buffered:
            block, buffered = buffered.split("\n\n", 1)
            lines = block.split("\n")
            if "event: timeline" in lines:
                yield orjson.loads(next(line for line in lines if line.startswith("data: "))[len("data: ") :])
