"""A settled order leaves the table once its retention has passed, and an event older than the retention for an
order the table no longer has is ignored: after a restart too, before the restarted worker knows how far it has
read its input (its safe time), because the horizon that says so is kept on the table's changelog. A backlog
written while no worker ran is still reconciled, though older than the retention by then. Real broker; the
worker as a process."""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord

from contracts.base import Message
from contracts.codec import Record, decode, encode, envelope_for
from contracts.commands import RetryCredit
from contracts.events import CreditPosted, OrderStatus, OrderStatusChanged, PaymentSucceeded
from contracts.topics import Topic
from credited.stack.processes import Child, wait_for
from tests.conftest import Broker
from tests.kafka_reader import read_all, read_until
from tests.reconciler.integration.worker_process import worker_process
from tests.stoppable_broker import health

STARTUP_S = 150
RETENTION_S = 3.0
SETTINGS = {"retention_s": str(RETENTION_S), "compensation_minor": "100"}


def payment(order_id: str, paid_at: datetime) -> Record:
    message = PaymentSucceeded(
        order_id=order_id, user_id=f"user-{order_id}", amount=600, currency="CNY", channel="card",
        provider="sim", provider_txn_id=f"tx-{order_id}", paid_at=paid_at,
    )  # fmt: skip
    return encode(message, envelope_for(message, producer="payments"))


def credit(order_id: str, credited_at: datetime) -> Record:
    message = CreditPosted(
        order_id=order_id, user_id=f"user-{order_id}", amount=600, currency="CNY", transaction_id=f"t-{order_id}",
        credited_at=credited_at,
    )  # fmt: skip
    return encode(message, envelope_for(message, producer="ledger"))


async def write(bootstrap: str, *records: tuple[str, Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, record in records:
            await producer.send_and_wait(topic, record.value, key=record.key, headers=record.headers)
    finally:
        await producer.stop()


async def ready(worker: Child) -> None:
    port = int(worker.env["RECONCILER_HTTP_PORT"])
    up = lambda: (health(port) or (0, {}))[0] == 200  # noqa: E731
    await asyncio.to_thread(wait_for, up, timeout_s=STARTUP_S, what="reconciler ready", child=worker)


def messages(records: list[ConsumerRecord[bytes, bytes]]) -> list[Message]:
    return [decode(r.value, r.headers)[0] for r in records if r.value is not None]


def retried(order_id: str) -> Callable[[list[ConsumerRecord[bytes, bytes]]], bool]:
    return lambda records: any(isinstance(m, RetryCredit) and m.order_id == order_id for m in messages(records))


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_after_a_restart_a_replay_for_a_dropped_order_is_ignored_and_a_backlog_older_than_the_retention_is_not(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> None:
    prefix = f"{isolation}."
    payments, credits = Topic.PAYMENTS_EVENTS.qualified(prefix), Topic.LEDGER_EVENTS.qualified(prefix)
    commands = Topic.LEDGER_COMMANDS.qualified(prefix)
    changelog = f"{prefix}credited-reconciler-order-state-changelog"
    dropped, away, last = f"ord_{isolation}_dropped", f"ord_{isolation}_away", f"ord_{isolation}_last"
    with worker_process(broker.bootstrap, broker.kind, database_url, isolation, tmp_path / "first", **SETTINGS) as w:
        await ready(w)
        # Stamped once the worker is in its group: stamped before, they could be past the retention on arrival.
        now = datetime.now(UTC)
        paid, credited = payment(dropped, now), credit(dropped, now + timedelta(milliseconds=1))
        await write(broker.bootstrap, (payments, paid), (credits, credited))  # credited in time
        gone = lambda rs: any(r.key == dropped.encode() and r.value is None for r in rs)  # noqa: E731
        await read_until(broker.bootstrap, changelog, gone, timeout_s=STARTUP_S)  # its retention has passed
    stopped_at = datetime.now(UTC)

    # While no worker runs: the order's payment again (a dead letter replayed late), and a payment of an order
    # never credited, whose event came late too: older than the retention once the next worker runs.
    away_paid_at = stopped_at - timedelta(seconds=RETENTION_S - 0.5)
    await write(broker.bootstrap, (payments, paid), (payments, payment(away, away_paid_at)))

    with worker_process(broker.bootstrap, broker.kind, database_url, isolation, tmp_path / "second", **SETTINGS) as w:
        await ready(w)
        assert away_paid_at < datetime.now(UTC) - timedelta(seconds=RETENTION_S), "the backlog is past the retention"
        await read_until(broker.bootstrap, commands, retried(away), timeout_s=STARTUP_S)  # the backlog reconciled
        # The credit again too, now that the payment's replay has been judged; then an order to wait for.
        await write(broker.bootstrap, (credits, credited), (payments, payment(last, datetime.now(UTC))))
        sent = messages(await read_until(broker.bootstrap, commands, retried(last), timeout_s=STARTUP_S))
        assert w.alive(), w.tail()

    assert [m for m in sent if m.order_id == dropped] == [], "no RetryCredit, no GrantCompensation"
    statuses = messages(await read_all(broker.bootstrap, Topic.ORDERS_STATUS.qualified(prefix)))
    told = [m.status for m in statuses if isinstance(m, OrderStatusChanged) and m.order_id == dropped]
    assert told == [OrderStatus.CREDITED], "told once, in time: never delayed, never compensated"
