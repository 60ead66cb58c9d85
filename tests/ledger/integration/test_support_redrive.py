"""A person's re-drive (RedriveCredit on ledger.redrives) on the real broker and PostgreSQL: it lifts the ledger's
block on a blocked order and credits it once, in the transaction that lifts the block; a retry without it is still
refused for good; a refunded order is refused for good whoever asks. A re-drive on ledger.commands, which the
reconciler's principal writes too, lifts nothing: dead-lettered `wrong_topic`, as a RedriveCredit or as a RetryCredit
naming who asked."""

import asyncio
import contextlib
from collections import defaultdict
from datetime import UTC, datetime

from contracts.base import Message
from contracts.codec import decode, encode, envelope_for
from contracts.commands import BlockCredit, RedriveCredit, RetryCredit
from contracts.events import CreditPosted, CreditRejected
from contracts.topics import Topic
from ledger.bootstrap import build
from ledger.config import Settings
from servicekit.kafka import KafkaPublisher
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_until
from tests.ledger.messages import AMOUNT, payment, refund
from tests.service_settings import settings_for

REASON = "retries exhausted"


def retry(order_id: str, attempt: int, requested_by: str | None = None) -> RetryCredit:
    return RetryCredit(
        order_id=order_id,
        user_id=f"user-{order_id}",
        amount=AMOUNT,
        currency="CNY",
        attempt=attempt,
        requested_at=datetime.now(UTC),
        provider_txn_id=f"tx-{order_id}",
        requested_by=requested_by,
    )


def redrive(order_id: str) -> RedriveCredit:
    """The re-drive payments' support API sends: the retry's payment fact, naming who asked."""
    return RedriveCredit(**retry(order_id, 1).model_dump(exclude={"requested_by"}), requested_by="support-alice")


def blocking(order_id: str) -> BlockCredit:
    return BlockCredit(order_id=order_id, user_id=f"user-{order_id}", reason=REASON, requested_at=datetime.now(UTC))


async def test_a_redrive_credits_a_blocked_order_once_and_a_refunded_one_never(
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

    async def holds(sql: str) -> bool:
        return bool(await infra.pool.fetchval(sql))

    try:
        for consumer in infra.consumers:
            await consumer.start()
        tasks = [asyncio.create_task(c.run()) for c in infra.consumers]
        tasks.append(asyncio.create_task(infra.relay.run()))
        # Both orders are blocked before their payment arrives (the block names no parked retry: it holds at once).
        for order_id in ("ord_blocked", "ord_refunded"):
            await send(Topic.LEDGER_COMMANDS, blocking(order_id), f"{order_id}-block")
        await eventually(lambda: holds("SELECT count(*) = 2 FROM credit_blocks"), timeout_s=60)
        await send(Topic.PAYMENTS_EVENTS, payment("ord_blocked"), "ord_blocked-pay")
        await send(Topic.PAYMENTS_EVENTS, payment("ord_refunded"), "ord_refunded-pay")
        await send(Topic.PAYMENTS_EVENTS, refund("ord_refunded"), "ord_refunded-refund")
        refunded = "SELECT reason = 'order refunded' FROM credit_blocks WHERE order_id = 'ord_refunded'"
        await eventually(lambda: holds(refunded), timeout_s=60)
        await eventually(lambda: holds("SELECT count(*) = 2 FROM payment_facts"), timeout_s=60)

        await send(Topic.LEDGER_COMMANDS, retry("ord_blocked", 1), "ord_blocked-retry")  # the reconciler's
        # Re-drives where any writer of ledger.commands could put them: neither lifts the block.
        await send(Topic.LEDGER_COMMANDS, retry("ord_blocked", 2, "support-alice"), "ord_blocked-forged-retry")
        await send(Topic.LEDGER_COMMANDS, redrive("ord_blocked"), "ord_blocked-forged-redrive")
        dead = await read_until(
            broker.bootstrap, Topic.DEAD_LETTER.qualified(settings.topic_prefix), lambda r: len(r) >= 2
        )
        reasons = sorted(dict(record.headers)["dlq_reason"].decode() for record in dead)
        assert all(r.startswith("rejected: wrong_topic: ") for r in reasons) and len(reasons) == 2, reasons
        assert any("does not carry RedriveCredit" in r for r in reasons), reasons  # the consumer's refusal
        assert any("RetryCredit naming requested_by is refused" in r for r in reasons), reasons  # the ledger's
        assert {dict(record.headers)["dlq_source_topic"] for record in dead} == {
            Topic.LEDGER_COMMANDS.qualified(settings.topic_prefix).encode()
        }
        assert {record.key for record in dead} == {b"ord_blocked"}
        rejected = infra.registry.get_sample_value(
            "credited_rejected_messages_total",
            {"service": "ledger", "group": "ledger.commands", "reason": "wrong_topic"},
        )
        assert rejected == 2
        assert await holds("SELECT count(*) = 2 FROM credit_blocks") and not await holds(
            "SELECT count(*) FROM transactions"
        )

        await send(Topic.LEDGER_REDRIVES, redrive("ord_blocked"), "ord_blocked-redrive-1")
        await send(Topic.LEDGER_REDRIVES, redrive("ord_blocked"), "ord_blocked-redrive-2")
        await send(Topic.LEDGER_REDRIVES, redrive("ord_refunded"), "ord_refunded-redrive")

        # ord_blocked: the block's, the payment's and the plain retry's rejections, the credit, its echo;
        # ord_refunded: the block's and the payment's rejections, the re-drive's.
        announced = await read_until(
            broker.bootstrap, Topic.LEDGER_EVENTS.qualified(settings.topic_prefix), lambda r: len(r) >= 8
        )
        said: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for record in announced:
            message = decode(record.value, record.headers)[0]
            if isinstance(message, CreditRejected):
                said[message.order_id].append(("rejected" if message.final else "retryable", message.reason))
            else:
                assert isinstance(message, CreditPosted)
                said[message.order_id].append(("posted", str(message.amount)))
        blocked = ("rejected", f"blocked: {REASON}")
        assert said["ord_blocked"] == [blocked, blocked, blocked, ("posted", str(AMOUNT)), ("posted", str(AMOUNT))]
        assert said["ord_refunded"] == [blocked, blocked, ("rejected", "order refunded")]

        books = await infra.pool.fetch("SELECT order_id, kind FROM transactions")
        assert [tuple(r) for r in books] == [("ord_blocked", "credit")]
        wallets = await infra.pool.fetch("SELECT user_id, balance FROM accounts WHERE kind = 'wallet'")
        assert {r["user_id"]: r["balance"] for r in wallets} == {"user-ord_blocked": AMOUNT}
        blocks = await infra.pool.fetch("SELECT order_id, reason FROM credit_blocks")
        assert [tuple(r) for r in blocks] == [("ord_refunded", "order refunded")]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.stop()
        with contextlib.suppress(Exception):
            await infra.close()
