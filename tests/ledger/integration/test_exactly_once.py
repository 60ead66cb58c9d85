"""Exactly one credit per order whatever arrives, on the real PostgreSQL: the payment event twice, retries, a later
payment event that contradicts the first (refused), and both at once from two consumers, first as concurrent batches
(sharing orders, each one transaction), then as two ledger instances on the real broker."""

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from contracts.base import Message
from contracts.codec import decode, deterministic_id, encode, envelope_for
from contracts.commands import RetryCredit
from contracts.events import CreditPosted, PaymentSucceeded
from contracts.topics import Topic
from ledger import handlers
from ledger.adapters.postgres import PostgresLedger
from ledger.bootstrap import MIGRATIONS, build
from ledger.config import Settings
from servicekit.kafka import KafkaPublisher
from servicekit.postgres import create_pool, migrate
from servicekit.rejections import PermanentFailure
from servicekit.uow import batch, no_relay
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_all
from tests.ledger.messages import payment
from tests.ledger.outbox import outbox_messages
from tests.service_settings import settings_for

AMOUNT = 600
NO_FAULTS = handlers.FaultPolicy()


def retry(order_id: str, attempt: int) -> RetryCredit:
    return RetryCredit(
        order_id=order_id,
        user_id=f"user-{order_id}",
        amount=AMOUNT,
        currency="CNY",
        attempt=attempt,
        requested_at=datetime.now(UTC),
        provider_txn_id=f"tx-{order_id}",
    )


def deliveries(order_id: str) -> list[tuple[Message, str]]:
    """What can arrive for one paid order: its payment event twice, announced again under a new id, and two
    retries, one of them twice."""
    return [
        (payment(order_id), f"{order_id}-pay"),
        (payment(order_id), f"{order_id}-pay"),
        (payment(order_id), f"{order_id}-pay-again"),
        (retry(order_id, 1), f"{order_id}-retry-1"),
        (retry(order_id, 1), f"{order_id}-retry-1"),
        (retry(order_id, 2), f"{order_id}-retry-2"),
    ]


async def assert_one_credit_per_order(conn: asyncpg.Connection, orders: list[str]) -> None:
    credits = await conn.fetch("SELECT order_id, count(*) AS n FROM transactions WHERE kind = 'credit' GROUP BY 1")
    assert {r["order_id"]: r["n"] for r in credits} == dict.fromkeys(orders, 1)
    wallets = await conn.fetch("SELECT user_id, balance FROM accounts WHERE kind = 'wallet'")
    assert {r["user_id"]: r["balance"] for r in wallets} == {f"user-{o}": AMOUNT for o in orders}
    assert await conn.fetchval("SELECT balance FROM accounts WHERE kind = 'topup_clearing'") == -AMOUNT * len(orders)
    assert await conn.fetchval("SELECT count(*) FROM entries") == 2 * len(orders)


@pytest.fixture
async def pool(database_url: str, isolation: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, f"{isolation}_ledger", min_size=4, max_size=24)
    await migrate(pool, MIGRATIONS)
    yield pool
    await pool.close()


async def test_a_later_payment_event_contradicting_the_recorded_payment_is_refused_and_credits_nothing(
    pool: asyncpg.Pool,
) -> None:
    only_registered = handlers.UserPolicy(register_on_first_credit=False)

    async def consume(message: PaymentSucceeded, event_id: str) -> None:
        def uow() -> PostgresLedger:
            return PostgresLedger(pool, producer="ledger", topic_prefix="", on_commit=no_relay)

        async with batch(pool):
            delivery = (message, envelope_for(message, producer="payments", event_id=event_id))
            await handlers.handle_batch([delivery], uow=uow, users=only_registered)

    # The first payment event records the fact (600 CNY), its credit refused for now: its user is not registered.
    await consume(payment("ord_1"), "ord_1-pay")
    await pool.execute("INSERT INTO users (user_id, currency) VALUES ('user-ord_1', 'CNY')")
    # Another PaymentSucceeded for the order under another event id, saying 900: a producer's bug, or forged.
    other = payment("ord_1").model_copy(update={"amount": 900, "paid_at": datetime.now(UTC)})
    with pytest.raises(PermanentFailure, match="amount 900 is not the paid 600") as refused:
        await consume(other, "ord_1-pay-other")
    assert refused.value.label == "payment_fact_mismatch"
    assert await pool.fetchval("SELECT amount FROM payment_facts WHERE order_id = 'ord_1'") == AMOUNT
    assert await pool.fetchval("SELECT count(*) FROM transactions WHERE order_id = 'ord_1'") == 0


@pytest.mark.parametrize("batch_size", [1, 7])
async def test_concurrent_payments_and_retries_for_the_same_orders_credit_each_once(
    pool: asyncpg.Pool, batch_size: int
) -> None:
    orders = [f"ord_{i}" for i in range(20)]

    def uow() -> PostgresLedger:
        return PostgresLedger(pool, producer="ledger", topic_prefix="", on_commit=no_relay)

    async def consume(deliveries: list[tuple[Message, str]], faults: handlers.FaultPolicy = NO_FAULTS) -> None:
        async with batch(pool):
            await handlers.handle_batch(
                [(m, envelope_for(m, producer="test", event_id=e)) for m, e in deliveries], uow=uow, faults=faults
            )

    # Every order paid once with its credit dropped (what the reconciler retries): its payment fact is recorded,
    # so every retry below has a payment behind it.
    await consume([(payment(o), f"{o}-dropped") for o in orders], handlers.FaultPolicy(drop_credit_share=1.0))

    # All deliveries of all orders shuffled into batches, all at once on as many connections as the pool has:
    # batches share orders, and each takes its orders' locks in one fixed order.
    everything = [d for o in orders for d in deliveries(o)]
    random.Random(batch_size).shuffle(everything)
    await asyncio.gather(*(consume(everything[i : i + batch_size]) for i in range(0, len(everything), batch_size)))

    async with pool.acquire() as conn:
        await assert_one_credit_per_order(conn, orders)
        announced = await outbox_messages(conn)
    credits = [(m, env) for _, m, env in announced if isinstance(m, CreditPosted)]
    first = Counter(
        m.order_id for m, env in credits if env.event_id == deterministic_id("CreditPosted", m.order_id, "credit")
    )
    assert first == dict.fromkeys(orders, 1)  # one credit announced per order; the rest are re-announcements
    by_order: dict[str, set[str]] = {}
    for m, _ in credits:
        by_order.setdefault(m.order_id, set()).add(m.transaction_id)
    assert all(len(ids) == 1 for ids in by_order.values())


async def test_two_ledger_instances_consuming_duplicates_and_retries_at_once_credit_each_order_once(
    broker: Broker, database_url: str, isolation: str
) -> None:
    settings = settings_for(Settings, broker, database_url, isolation)
    instances = [await build(settings) for _ in range(2)]
    tasks: list[asyncio.Task[None]] = []
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test")
    await publisher.start()
    orders = [f"ord_{i}" for i in range(60)]
    try:
        for infra, _ in instances:
            for consumer in infra.consumers:
                await consumer.start()
            tasks += [asyncio.create_task(c.run()) for c in infra.consumers]
            tasks.append(asyncio.create_task(infra.relay.run()))
        records = []
        for order_id in orders:
            for message, event_id in deliveries(order_id):
                topic = Topic.PAYMENTS_EVENTS if isinstance(message, PaymentSucceeded) else Topic.LEDGER_COMMANDS
                envelope = envelope_for(message, producer="test", event_id=event_id)
                records.append((topic.qualified(settings.topic_prefix), encode(message, envelope)))
        await publisher.publish_many(records)

        def consumed() -> int:
            return sum(c.consumed_total for infra, _ in instances for c in infra.consumers)

        await eventually(lambda: consumed() >= len(records), timeout_s=90)
        outbox_empty = "SELECT count(*) = 0 FROM outbox"
        await eventually(lambda: instances[0][0].pool.fetchval(outbox_empty), timeout_s=30)
        async with instances[0][0].pool.acquire() as conn:
            await assert_one_credit_per_order(conn, orders)
            # Both instances took part: each consumed some of the records.
            assert all(sum(c.consumed_total for c in infra.consumers) > 0 for infra, _ in instances)
        announced = await read_all(broker.bootstrap, Topic.LEDGER_EVENTS.qualified(settings.topic_prefix))
        decoded = [decode(r.value, r.headers) for r in announced]
        first = Counter(
            m.order_id for m, env in decoded if env.event_id == deterministic_id("CreditPosted", m.order_id, "credit")
        )
        assert first == dict.fromkeys(orders, 1)
        assert {type(m) for m, _ in decoded} == {CreditPosted}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.stop()
        for infra, _ in instances:
            with contextlib.suppress(Exception):
                await infra.close()
