"""A record the reconciler cannot apply, a payment whose deadline lies past what a datetime holds, goes to the
dead-letter topic with its reason, and the worker (a real process on the session's broker) goes on with the records
after it. It used to crash the agent on every round that held it: its partition stood still for good."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka.structs import ConsumerRecord

from contracts.codec import Record
from contracts.events import OrderStatus, OrderStatusChanged
from contracts.topics import Topic
from tests.conftest import Broker
from tests.kafka_reader import read_until
from tests.reconciler.integration.test_retention_after_restart import STARTUP_S, credit, messages, payment, ready, write
from tests.reconciler.integration.worker_process import worker_process


async def lettered_before_the_next_order(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path, bad: Record
) -> ConsumerRecord[bytes, bytes]:
    """`bad` on payments.events, then an order paid and credited, to a worker: the order is credited (its one status),
    the worker still runs, and `bad`'s dead letter is returned."""
    prefix, good = f"{isolation}.", f"ord_{isolation}_good"
    payments, credits = Topic.PAYMENTS_EVENTS.qualified(prefix), Topic.LEDGER_EVENTS.qualified(prefix)
    with worker_process(broker.bootstrap, broker.kind, database_url, isolation, tmp_path) as worker:
        await ready(worker)
        now = datetime.now(UTC)
        await write(broker.bootstrap, (payments, bad), (payments, payment(good, now)))
        await write(broker.bootstrap, (credits, credit(good, now + timedelta(milliseconds=1))))
        told = lambda rs: any(isinstance(m, OrderStatusChanged) and m.order_id == good for m in messages(rs))  # noqa: E731
        status = Topic.ORDERS_STATUS.qualified(prefix)
        statuses = messages(await read_until(broker.bootstrap, status, told, timeout_s=STARTUP_S))
        assert [(m.order_id, m.status) for m in statuses if isinstance(m, OrderStatusChanged)] == [
            (good, OrderStatus.CREDITED)
        ]
        lettered = lambda rs: any(r.key == bad.key for r in rs)  # noqa: E731
        letters = await read_until(broker.bootstrap, Topic.DEAD_LETTER.qualified(prefix), lettered, timeout_s=30)
        assert worker.alive(), worker.tail()
    [letter] = [r for r in letters if r.key == bad.key]
    return letter


async def test_a_payment_whose_deadline_is_past_the_calendar_is_dead_lettered_and_the_next_order_is_credited(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> None:
    end_of_time = payment(f"ord_{isolation}_bad", datetime.max.replace(tzinfo=UTC))
    letter = await lettered_before_the_next_order(broker, database_url, isolation, tmp_path, end_of_time)
    assert letter.value == end_of_time.value
    assert dict(letter.headers)["dlq_reason"].startswith(b"handler failed: OverflowError")
