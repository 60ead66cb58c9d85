"""A RetryCredit credits only an order whose recorded payment it matches, on the real broker and PostgreSQL: one for
an order never paid, or differing from the payment, is dead-lettered with its reason, counted, and moves nothing;
the reconciler's retry after a dropped credit still credits once."""

import asyncio
import contextlib
from collections import Counter
from datetime import UTC, datetime

from contracts.base import Message
from contracts.codec import decode, encode, envelope_for
from contracts.commands import RetryCredit
from contracts.events import CreditPosted, PaymentSucceeded
from contracts.topics import Topic
from ledger.bootstrap import build
from ledger.config import Settings
from servicekit.kafka import KafkaPublisher
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_all, read_until
from tests.service_settings import settings_for

AMOUNT = 600


def payment(order_id: str) -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id=order_id,
        user_id=f"user-{order_id}",
        amount=AMOUNT,
        currency="CNY",
        channel="card",
        provider="sim",
        provider_txn_id=f"tx-{order_id}",
        paid_at=datetime.now(UTC),
    )


def retry(order_id: str, attempt: int, amount: int = AMOUNT) -> RetryCredit:
    return RetryCredit(
        order_id=order_id,
        user_id=f"user-{order_id}",
        amount=amount,
        currency="CNY",
        attempt=attempt,
        requested_at=datetime.now(UTC),
        provider_txn_id=f"tx-{order_id}",
    )


async def test_a_retry_without_a_matching_payment_is_dead_lettered_and_a_retry_after_a_dropped_credit_credits_once(
    broker: Broker, database_url: str, isolation: str
) -> None:
    # Every credit from a payment event is dropped: only a retry can credit, as after a real dropped credit.
    settings = settings_for(Settings, broker, database_url, isolation, fault_drop_credit_share=1.0)
    infra, _ = await build(settings)
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test")
    await publisher.start()
    tasks: list[asyncio.Task[None]] = []
    commands = Topic.LEDGER_COMMANDS.qualified(settings.topic_prefix)

    async def send(topic: str, message: Message, event_id: str) -> None:
        await publisher.publish_many([(topic, encode(message, envelope_for(message, producer="t", event_id=event_id)))])

    try:
        for consumer in infra.consumers:
            await consumer.start()
        tasks = [asyncio.create_task(c.run()) for c in infra.consumers] + [asyncio.create_task(infra.relay.run())]
        await send(Topic.PAYMENTS_EVENTS.qualified(settings.topic_prefix), payment("ord_paid"), "paid-pay")
        has_fact = "SELECT count(*) = 1 FROM payment_facts WHERE order_id = 'ord_paid'"
        await eventually(lambda: infra.pool.fetchval(has_fact), timeout_s=60)

        await send(commands, retry("ord_ghost", 1), "ghost-retry-1")  # never paid: a made-up order
        await send(commands, retry("ord_paid", 1, amount=AMOUNT * 100), "paid-retry-1")  # more than was paid
        dead = await read_until(
            broker.bootstrap, Topic.DEAD_LETTER.qualified(settings.topic_prefix), lambda r: len(r) >= 2
        )
        reasons = {r.key: dict(r.headers)["dlq_reason"].decode() for r in dead}
        assert reasons == {
            b"ord_ghost": "rejected: the ledger has recorded no PaymentSucceeded for the order",
            b"ord_paid": "rejected: the retry does not match the payment:"
            f" amount {AMOUNT * 100} is not the paid {AMOUNT}",
        }

        def rejected(label: str) -> float | None:
            labels = {"service": "ledger", "group": "ledger.commands", "reason": label}
            return infra.registry.get_sample_value("credited_rejected_messages_total", labels)

        # Counted once the broker acknowledged the dead letter, which a reader may see a moment before.
        await eventually(lambda: rejected("no_payment_fact") == rejected("payment_fact_mismatch") == 1, timeout_s=10)
        assert await infra.pool.fetchval("SELECT count(*) FROM transactions") == 0
        assert await infra.pool.fetchval("SELECT count(*) FROM accounts") == 0

        await send(commands, retry("ord_paid", 2), "paid-retry-2")
        await send(commands, retry("ord_paid", 3), "paid-retry-3")
        credited = "SELECT count(*) = 1 FROM transactions WHERE order_id = 'ord_paid'"
        await eventually(lambda: infra.pool.fetchval(credited), timeout_s=60)
        await eventually(lambda: infra.pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout_s=30)
        announced = await read_until(
            broker.bootstrap, Topic.LEDGER_EVENTS.qualified(settings.topic_prefix), lambda r: len(r) >= 2
        )
        messages = [decode(r.value, r.headers)[0] for r in announced]
        assert Counter(m.order_id for m in messages) == {"ord_paid": 2}  # the credit, and the next retry's echo
        assert all(isinstance(m, CreditPosted) for m in messages)
        books = await infra.pool.fetch("SELECT order_id, count(*) AS n FROM transactions GROUP BY order_id")
        assert {r["order_id"]: r["n"] for r in books} == {"ord_paid": 1}
        wallets = await infra.pool.fetch("SELECT user_id, balance FROM accounts WHERE kind = 'wallet'")
        assert {r["user_id"]: r["balance"] for r in wallets} == {"user-ord_paid": AMOUNT}
        assert len(await read_all(broker.bootstrap, Topic.DEAD_LETTER.qualified(settings.topic_prefix))) == 2
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.stop()
        with contextlib.suppress(Exception):
            await infra.close()
