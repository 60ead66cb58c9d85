"""The reconciler outlives its broker: started while the broker is stopped, it waits answering /healthz 503
naming the broker, and flags overdue orders once the broker comes; a broker restart under a running worker
leaves it running (not ready meanwhile), and it flags the orders paid after. Real broker of the session's kind
that the test starts and stops, the reconciler as a process."""

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord

from contracts.codec import decode, encode, envelope_for
from contracts.commands import RetryCredit
from contracts.events import PaymentSucceeded
from contracts.topics import Topic
from credited.stack.processes import Child, wait_for
from servicekit.kafka import KafkaPublisher
from tests.kafka_reader import read_until
from tests.reconciler.integration.worker_process import worker_process
from tests.stoppable_broker import StoppableBroker, health

STARTUP_S = 150  # deadlines, not sleeps: a JVM broker and the worker share two loaded cores


@pytest.fixture
def reconciler(own_broker: StoppableBroker, database_url: str, isolation: str, tmp_path: Path) -> Iterator[Child]:
    """A worker started with its broker stopped (the test starts the broker)."""
    with worker_process(own_broker.bootstrap, own_broker.kind, database_url, isolation, tmp_path) as child:
        yield child


def answer(child: Child) -> tuple[int, dict[str, object]]:
    return health(int(child.env["RECONCILER_HTTP_PORT"])) or (0, {})


def broker_away(child: Child) -> bool:
    status, body = answer(child)
    dependencies = body.get("dependencies")
    return status == 503 and isinstance(dependencies, dict) and dependencies["broker"]["ready"] is False


def ready(child: Child) -> bool:
    return answer(child)[0] == 200


async def pay(bootstrap: str, prefix: str, idempotence: bool) -> str:
    order_id = f"ord_{uuid.uuid4().hex}"
    message = PaymentSucceeded(
        order_id=order_id, user_id=f"user-{order_id}", amount=600, currency="CNY", channel="card",
        provider="sim", provider_txn_id=f"tx-{order_id}", paid_at=datetime.now(UTC),
    )  # fmt: skip
    publisher = KafkaPublisher(bootstrap, idempotence=idempotence, client_id="test-payments")
    await publisher.start()
    try:
        await publisher.publish(
            Topic.PAYMENTS_EVENTS.qualified(prefix), encode(message, envelope_for(message, producer="payments"))
        )
    finally:
        await publisher.stop()
    return order_id


async def retried(bootstrap: str, prefix: str, order_id: str) -> None:
    """Until the ledger is told to retry `order_id`'s credit: the order was flagged overdue."""

    def found(records: list[ConsumerRecord[bytes, bytes]]) -> bool:
        messages = [decode(r.value, r.headers)[0] for r in records]
        return any(isinstance(m, RetryCredit) and m.order_id == order_id for m in messages)

    await read_until(bootstrap, Topic.LEDGER_COMMANDS.qualified(prefix), found, timeout_s=STARTUP_S)


@pytest.mark.long
async def test_a_worker_started_without_its_broker_answers_503_naming_it_then_flags_overdue_orders_once_it_comes(
    own_broker: StoppableBroker, reconciler: Child, isolation: str
) -> None:
    away = lambda: broker_away(reconciler)  # noqa: E731
    await asyncio.to_thread(wait_for, away, timeout_s=STARTUP_S, what="503 naming the broker", child=reconciler)
    body = answer(reconciler)[1]
    assert body["error"] == "not_ready" and "broker" in str(body["detail"]), body

    await asyncio.to_thread(own_broker.start)
    up = lambda: ready(reconciler)  # noqa: E731
    await asyncio.to_thread(wait_for, up, timeout_s=STARTUP_S, what="reconciler ready", child=reconciler)
    prefix = f"{isolation}."
    order_id = await pay(own_broker.bootstrap, prefix, own_broker.kind == "apache")
    await retried(own_broker.bootstrap, prefix, order_id)
    assert reconciler.alive(), reconciler.tail()


@pytest.mark.long
async def test_a_broker_restart_under_a_running_worker_leaves_it_running_not_ready_and_it_resumes(
    own_broker: StoppableBroker, reconciler: Child, isolation: str
) -> None:
    prefix, idempotence = f"{isolation}.", own_broker.kind == "apache"
    await asyncio.to_thread(own_broker.start)
    up = lambda: ready(reconciler)  # noqa: E731
    await asyncio.to_thread(wait_for, up, timeout_s=STARTUP_S, what="reconciler ready", child=reconciler)
    await retried(own_broker.bootstrap, prefix, await pay(own_broker.bootstrap, prefix, idempotence))

    await asyncio.to_thread(own_broker.stop)
    away = lambda: broker_away(reconciler)  # noqa: E731
    await asyncio.to_thread(wait_for, away, timeout_s=STARTUP_S, what="503 naming the broker", child=reconciler)
    await asyncio.to_thread(own_broker.start)
    await asyncio.to_thread(wait_for, up, timeout_s=STARTUP_S, what="reconciler ready again", child=reconciler)
    await retried(own_broker.bootstrap, prefix, await pay(own_broker.bootstrap, prefix, idempotence))
    assert reconciler.alive() and reconciler.exit_code() is None, reconciler.tail()
