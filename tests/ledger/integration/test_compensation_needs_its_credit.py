"""A GrantCompensation pays only the wallet its order credited, at most what it credited, on the real broker and
PostgreSQL: one for another user or above the credit is dead-lettered with its reason, counted, and moves nothing;
the order's own compensation is granted once."""

import asyncio
import contextlib
from datetime import UTC, datetime

from contracts.base import Message
from contracts.codec import encode, envelope_for
from contracts.commands import GrantCompensation
from contracts.topics import Topic
from ledger.bootstrap import build
from ledger.config import Settings
from servicekit.kafka import KafkaPublisher
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_until
from tests.ledger.messages import payment
from tests.service_settings import settings_for

AMOUNT = 600


def compensation(user_id: str, amount: int) -> GrantCompensation:
    return GrantCompensation(
        order_id="ord_late", user_id=user_id, amount=amount, currency="CNY", requested_at=datetime.now(UTC)
    )


async def test_a_compensation_for_another_user_or_above_the_credit_is_dead_lettered_and_the_orders_own_is_granted(
    broker: Broker, database_url: str, isolation: str
) -> None:
    settings = settings_for(Settings, broker, database_url, isolation)
    infra, _ = await build(settings)
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test")
    await publisher.start()
    tasks: list[asyncio.Task[None]] = []

    async def send(topic: Topic, message: Message, event_id: str) -> None:
        record = encode(message, envelope_for(message, producer="t", event_id=event_id))
        await publisher.publish_many([(topic.qualified(settings.topic_prefix), record)])

    def rejected(label: str) -> float | None:
        labels = {"service": "ledger", "group": "ledger.commands", "reason": label}
        return infra.registry.get_sample_value("credited_rejected_messages_total", labels)

    try:
        for consumer in infra.consumers:
            await consumer.start()
        tasks = [asyncio.create_task(c.run()) for c in infra.consumers]
        tasks.append(asyncio.create_task(infra.relay.run()))
        await send(Topic.PAYMENTS_EVENTS, payment("ord_late"), "late-pay")
        credited = "SELECT count(*) = 1 FROM transactions WHERE order_id = 'ord_late'"
        await eventually(lambda: infra.pool.fetchval(credited), timeout_s=60)

        await send(Topic.LEDGER_COMMANDS, compensation("attacker", 50), "forged-comp")
        await send(Topic.LEDGER_COMMANDS, compensation("user-ord_late", 10**12), "huge-comp")
        dead = await read_until(
            broker.bootstrap, Topic.DEAD_LETTER.qualified(settings.topic_prefix), lambda r: len(r) >= 2
        )
        assert [(r.key, dict(r.headers)["dlq_reason"].decode()) for r in dead] == [
            (
                b"ord_late",
                "rejected: the compensation does not match the credit: user 'attacker' is not the credited "
                "'user-ord_late'",
            ),
            (b"ord_late", f"rejected: a compensation is at most the credited {AMOUNT}"),
        ]
        await eventually(
            lambda: rejected("compensation_mismatch") == rejected("compensation_above_credit") == 1, timeout_s=10
        )
        assert await infra.pool.fetchval("SELECT count(*) FROM transactions") == 1

        await send(Topic.LEDGER_COMMANDS, compensation("user-ord_late", 50), "late-comp")
        compensated = "SELECT count(*) = 2 FROM transactions WHERE order_id = 'ord_late'"
        await eventually(lambda: infra.pool.fetchval(compensated), timeout_s=60)
        wallets = await infra.pool.fetch("SELECT user_id, balance FROM accounts WHERE kind = 'wallet'")
        assert {r["user_id"]: r["balance"] for r in wallets} == {"user-ord_late": AMOUNT + 50}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.stop()
        with contextlib.suppress(Exception):
            await infra.close()
