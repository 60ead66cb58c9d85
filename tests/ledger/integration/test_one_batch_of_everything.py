"""One consumed batch holding a poison message, duplicates and a payment for a refunded order, on the real broker
and PostgreSQL: each gets its own right effect and nothing else in the batch is lost."""

import asyncio
import contextlib
from collections import Counter

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.base import Message
from contracts.codec import Record, decode, deterministic_id, encode, envelope_for
from contracts.events import CreditPosted, CreditRejected
from contracts.topics import Topic
from ledger import handlers
from ledger.adapters.postgres import PostgresLedger
from ledger.bootstrap import build
from ledger.config import Settings
from servicekit.kafka import KafkaPublisher
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_all, read_until
from tests.ledger.messages import payment, refund
from tests.service_settings import settings_for

AMOUNT = 600


def record(message: Message, event_id: str) -> Record:
    return encode(message, envelope_for(message, producer="payments", event_id=event_id))


def invalid(order_id: str) -> Record:
    """A PaymentSucceeded that is JSON with every header, but with a negative amount: it fails validation."""
    good = record(payment(order_id), f"{order_id}-pay")
    body = orjson.loads(good.value) | {"amount": -5}
    return Record(key=good.key, value=orjson.dumps(body), headers=good.headers)


async def committed_offset(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(tp)
        return offset
    finally:
        await consumer.stop()


async def test_a_batch_with_poison_duplicates_and_a_refunded_order_gives_each_its_effect_and_loses_nothing(
    broker: Broker, database_url: str, isolation: str
) -> None:
    # One partition and one member, and every record in it before the ledger starts: its first poll takes them
    # all, and no rebalance between two members can move the partition in the middle of that poll.
    settings = settings_for(Settings, broker, database_url, isolation).model_copy(
        update={"topic_partitions": 1, "payments_consumers": 1}
    )
    infra, _ = await build(settings)
    payments_topic = Topic.PAYMENTS_EVENTS.qualified(settings.topic_prefix)
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test")
    await publisher.start()
    tasks: list[asyncio.Task[None]] = []
    try:
        uow = infra.outbox_writers(PostgresLedger)  # as the service makes them: the relay below is woken

        # Applied before: the payment of ord_b, and the refund of ord_c (the reconciler blocked it, payments
        # refunded it).
        before = [payment("ord_b"), refund("ord_c")]
        await handlers.handle_batch(
            [
                (m, envelope_for(m, producer="payments", event_id=e))
                for m, e in zip(before, ["b-pay", "c-refund"], strict=True)
            ],
            uow=uow,
        )
        credited_before = await infra.pool.fetchval("SELECT count(*) FROM outbox")

        batch = [
            record(payment("ord_a"), "a-pay"),
            Record(key=b"ord_x", value=b"{not json", headers=record(payment("ord_x"), "x-pay").headers),
            invalid("ord_y"),
            record(payment("ord_a"), "a-pay"),  # the same event again, in the batch
            record(payment("ord_b"), "b-pay"),  # an event applied before
            record(payment("ord_c"), "c-pay"),  # paid, but refunded already
            record(payment("ord_d"), "d-pay"),  # after all of them, still credited
        ]
        await publisher.publish_many([(payments_topic, r) for r in batch])
        for consumer in infra.consumers:
            await consumer.start()
        tasks = [asyncio.create_task(c.run()) for c in infra.consumers] + [asyncio.create_task(infra.relay.run())]
        group = f"{settings.topic_prefix}ledger.payments"
        members = [c for c in infra.consumers if c.group_id == group]
        await eventually(lambda: sum(c.consumed_total for c in members) >= len(batch), timeout_s=90)

        polls = infra.registry.get_sample_value(
            "credited_consumer_poll_records_count", {"service": "ledger", "group": "ledger.payments"}
        )
        assert polls == 1, f"the records came in {polls} polls, not one batch"
        dead = await read_until(
            broker.bootstrap, Topic.DEAD_LETTER.qualified(settings.topic_prefix), lambda r: len(r) >= 2
        )
        reasons = {r.key: dict(r.headers)["dlq_reason"].decode() for r in dead}
        assert reasons.keys() == {b"ord_x", b"ord_y"}
        assert reasons[b"ord_x"].startswith("undecodable: value is not JSON")
        assert reasons[b"ord_y"].startswith("undecodable: PaymentSucceeded failed validation: amount")

        await eventually(lambda: infra.pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout_s=30)
        announced = [
            decode(r.value, r.headers)
            for r in await read_all(broker.bootstrap, Topic.LEDGER_EVENTS.qualified(settings.topic_prefix))
        ]
        assert len(announced) == credited_before + 3
        credits = Counter(m.order_id for m, _ in announced if isinstance(m, CreditPosted))
        assert credits == {"ord_a": 1, "ord_b": 1, "ord_d": 1}
        rejections = [m for m, _ in announced if isinstance(m, CreditRejected)]
        assert [(r.order_id, r.reason, r.final) for r in rejections] == [("ord_c", "order refunded", True)]
        ids = {e.event_id for m, e in announced if isinstance(m, CreditPosted)}
        assert deterministic_id("CreditPosted", "ord_a", "credit") in ids

        books = await infra.pool.fetch("SELECT order_id, count(*) AS n FROM transactions GROUP BY order_id")
        assert {r["order_id"]: r["n"] for r in books} == {"ord_a": 1, "ord_b": 1, "ord_d": 1}
        wallets = await infra.pool.fetch("SELECT user_id, balance FROM accounts WHERE kind = 'wallet'")
        assert {r["user_id"]: r["balance"] for r in wallets} == {f"user-ord_{o}": AMOUNT for o in "abd"}
        assert await infra.pool.fetchval("SELECT reason FROM credit_blocks WHERE order_id = 'ord_c'") == (
            "order refunded"
        )
        # Nothing is left to read again: the whole batch is committed.
        assert await committed_offset(broker.bootstrap, group, TopicPartition(payments_topic, 0)) == len(batch)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.stop()
        with contextlib.suppress(Exception):
            await infra.close()
