"""Transactions written to the reconciler's input topics (`credited dlq replay` on Apache Kafka replays into them
in transactions) leave a commit marker after each: an offset of the partition that no consumer is handed. The
broker says where the records resume after such an offset (BrokerOffsets.first_readable), and a running worker
reconciles the orders after a marker, and after one at the end of its input, instead of reading the partition
again for ever and stopping. Real broker; the worker as a process."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from contracts.codec import Record, decode, encode, envelope_for
from contracts.commands import RetryCredit
from contracts.events import PaymentSucceeded
from contracts.topics import Topic
from credited.stack.processes import Child, wait_for
from reconciler.adapters.offsets import BrokerOffsets
from servicekit.kafka import ensure_topics
from tests.conftest import Broker
from tests.kafka_reader import read_all, read_until
from tests.reconciler.integration.worker_process import worker_process
from tests.stoppable_broker import health

STARTUP_S = 150


def payment(order_id: str) -> Record:
    message = PaymentSucceeded(
        order_id=order_id, user_id=f"user-{order_id}", amount=600, currency="CNY", channel="card",
        provider="sim", provider_txn_id=f"tx-{order_id}", paid_at=datetime.now(UTC),
    )  # fmt: skip
    return encode(message, envelope_for(message, producer="payments"))


@pytest.fixture
async def producers(broker: Broker) -> AsyncIterator[tuple[AIOKafkaProducer, AIOKafkaProducer | None]]:
    """A plain producer, and a transactional one where the broker has transactions (not the embedded Tansu)."""
    plain = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    transactional = None
    if broker.idempotence:
        transactional = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=f"test-{uuid.uuid4()}")
    for producer in filter(None, (plain, transactional)):
        await producer.start()
    try:
        yield plain, transactional
    finally:
        for producer in filter(None, (plain, transactional)):
            await producer.stop()


async def write(producers: tuple[AIOKafkaProducer, AIOKafkaProducer | None], topic: str, record: Record, *,
                in_transaction: bool, partition: int = 0) -> None:  # fmt: skip
    """One record to `partition` of `topic`; in a transaction of its own when asked and the broker has them."""
    plain, transactional = producers
    if in_transaction and transactional is not None:
        async with transactional.transaction():
            await transactional.send(topic, record.value, key=record.key, headers=record.headers, partition=partition)
    else:
        await plain.send_and_wait(topic, record.value, key=record.key, headers=record.headers, partition=partition)


async def test_the_broker_says_where_records_resume_past_transaction_markers(
    broker: Broker, producers: tuple[AIOKafkaProducer, AIOKafkaProducer | None], isolation: str
) -> None:
    topic, tp = f"{isolation}.markers", TopicPartition(f"{isolation}.markers", 0)
    await ensure_topics(broker.bootstrap, [topic], 1)
    for n, in_transaction in enumerate((False, True, False, True)):
        await write(producers, topic, payment(f"ord_{isolation}_{n}"), in_transaction=in_transaction)
    probe = BrokerOffsets(broker.bootstrap, tansu=not broker.idempotence)
    await probe.start()
    try:
        # The broker writes a commit marker after it has answered the commit, so wait for both markers.
        markers, end = (2 if broker.idempotence else 0), 0
        for _ in range(100):
            end = (await probe.end_offsets([tp]))[tp]
            if end >= 4 + markers:
                break
            await asyncio.sleep(0.1)
        records = {r.offset for r in await read_all(broker.bootstrap, topic)}
        assert len(records) == 4 and end == 4 + markers, (records, end)
        assert len(set(range(end)) - records) == markers  # each marker took an offset no record is at
        for offset in range(end + 1):
            resumes = min((r for r in records if r >= offset), default=end)
            assert await probe.first_readable(topic, 0, offset, end) == resumes, offset
    finally:
        await probe.stop()


@pytest.fixture
def reconciler(broker: Broker, database_url: str, isolation: str, tmp_path: Path) -> Iterator[Child]:
    with worker_process(broker.bootstrap, broker.kind, database_url, isolation, tmp_path) as child:
        yield child


async def test_a_worker_reconciles_the_orders_written_after_a_transaction_and_one_ending_its_input(
    broker: Broker,
    producers: tuple[AIOKafkaProducer, AIOKafkaProducer | None],
    reconciler: Child,
    isolation: str,
) -> None:
    port = int(reconciler.env["RECONCILER_HTTP_PORT"])
    ready = lambda: (health(port) or (0, {}))[0] == 200  # noqa: E731
    await asyncio.to_thread(wait_for, ready, timeout_s=STARTUP_S, what="reconciler ready", child=reconciler)
    prefix = f"{isolation}."
    payments = Topic.PAYMENTS_EVENTS.qualified(prefix)
    # A replayed payment in a transaction, an ordinary one after its marker, and another transaction last (on the
    # embedded Tansu, which has no transactions, the same three written plainly, with no marker between): none
    # is credited, so the worker flags all three once their deadline (1 s) passes.
    orders = [f"ord_{isolation}_replayed", f"ord_{isolation}_after", f"ord_{isolation}_last"]
    for order_id, in_transaction in zip(orders, (True, False, True), strict=True):
        await write(producers, payments, payment(order_id), in_transaction=in_transaction)

    def all_retried(records: list[ConsumerRecord[bytes, bytes]]) -> bool:
        retried = {m.order_id for m in (decode(r.value, r.headers)[0] for r in records) if isinstance(m, RetryCredit)}
        return retried >= set(orders)

    await read_until(broker.bootstrap, Topic.LEDGER_COMMANDS.qualified(prefix), all_retried, timeout_s=STARTUP_S)
    assert reconciler.alive() and reconciler.exit_code() is None, reconciler.tail()


FLAGGED_WHILE_FLOWING_S = 15.0
"""How long the replayed order has to be flagged while payments keep arriving on the other partition."""


def retried(records: list[ConsumerRecord[bytes, bytes]]) -> set[str]:
    """The orders a RetryCredit was sent for: the orders flagged overdue."""
    return {m.order_id for m in (decode(r.value, r.headers)[0] for r in records) if isinstance(m, RetryCredit)}


@pytest.fixture
def reconciler_of_two_partitions(broker: Broker, database_url: str, isolation: str, tmp_path: Path) -> Iterator[Child]:
    with worker_process(broker.bootstrap, broker.kind, database_url, isolation, tmp_path, partitions=2) as child:
        yield child


async def test_a_payment_whose_partition_ends_in_a_transaction_marker_is_flagged_on_time_while_others_flow(
    broker: Broker,
    producers: tuple[AIOKafkaProducer, AIOKafkaProducer | None],
    reconciler_of_two_partitions: Child,
    isolation: str,
) -> None:
    """A replayed payment, the last record of its partition before the commit marker of its transaction, while
    payments keep arriving on the worker's other partition: its order is flagged soon after its
    deadline (1 s), not once the other partition falls quiet or a record comes to its own."""
    reconciler = reconciler_of_two_partitions
    port = int(reconciler.env["RECONCILER_HTTP_PORT"])
    ready = lambda: (health(port) or (0, {}))[0] == 200  # noqa: E731
    await asyncio.to_thread(wait_for, ready, timeout_s=STARTUP_S, what="reconciler ready", child=reconciler)
    prefix = f"{isolation}."
    payments, commands = Topic.PAYMENTS_EVENTS.qualified(prefix), Topic.LEDGER_COMMANDS.qualified(prefix)
    first = f"ord_{isolation}_first"  # read by the worker before the test's clock starts
    await write(producers, payments, payment(first), in_transaction=False, partition=1)
    await read_until(broker.bootstrap, commands, lambda records: first in retried(records), timeout_s=STARTUP_S)

    async def traffic() -> None:
        n = 0
        while True:
            n += 1
            await write(producers, payments, payment(f"ord_{isolation}_flow_{n}"), in_transaction=False, partition=1)
            await asyncio.sleep(0.25)

    flowing = asyncio.create_task(traffic())
    try:
        await asyncio.sleep(1.0)
        replayed = f"ord_{isolation}_replayed"
        await write(producers, payments, payment(replayed), in_transaction=True, partition=0)
        # While the traffic flows: a worker waiting for the other partition to fall quiet never flags it. The
        # bound leaves a slow machine room (its deadline is 1 s, the broker is asked after 0.5 s of standstill).
        await read_until(
            broker.bootstrap, commands, lambda records: replayed in retried(records), timeout_s=FLAGGED_WHILE_FLOWING_S
        )
    finally:
        flowing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flowing
    assert reconciler.alive() and reconciler.exit_code() is None, reconciler.tail()
