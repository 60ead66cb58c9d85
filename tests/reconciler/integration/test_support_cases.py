"""A refund that fails puts the order in a person's hands: the reconciler, a real worker process on the session's
broker, asks for a needs_support case on support.cases that pages, once."""

import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord

from contracts.base import Message
from contracts.codec import decode, encode, envelope_for
from contracts.commands import IssueRefund
from contracts.events import CaseKind, CaseRequested, CaseSeverity, CreditRejected, PaymentSucceeded, RefundFailed
from contracts.topics import Topic
from credited.stack.processes import Child, free_port, wait_for
from servicekit.kafka import KafkaPublisher
from tests.conftest import Broker
from tests.kafka_reader import read_until
from tests.stoppable_broker import health, service_env

STARTUP_S = 150  # deadlines, not sleeps: a JVM broker and the worker share two loaded cores


@pytest.fixture
def reconciler(broker: Broker, database_url: str, isolation: str, tmp_path: Path) -> Iterator[Child]:
    """A worker on the test's own topics (one partition each), ready."""
    env = service_env(
        "reconciler", broker.bootstrap, broker.kind, database_url, isolation,
        http_port=str(free_port()), data_dir=str(tmp_path / "reconciler"),
    )  # fmt: skip
    child = Child("reconciler", [sys.executable, "-m", "reconciler"], log_path=tmp_path / "reconciler.log", env=env)
    child.start()
    ready = lambda: (health(int(env["RECONCILER_HTTP_PORT"])) or (0,))[0] == 200  # noqa: E731
    try:
        wait_for(ready, timeout_s=STARTUP_S, what="reconciler ready", child=child)
        yield child
    finally:
        child.stop()


async def publish(broker: Broker, topic: str, *messages: Message) -> None:
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test-support-cases")
    await publisher.start()
    try:
        for message in messages:
            await publisher.publish(topic, encode(message, envelope_for(message, producer="test")))
    finally:
        await publisher.stop()


def of_order(records: list[ConsumerRecord[bytes, bytes]], kind: type[Message], order_id: str) -> list[Message]:
    messages = [decode(r.value, r.headers)[0] for r in records]
    return [m for m in messages if isinstance(m, kind) and m.order_id == order_id]


def paid(order_id: str, at: datetime) -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id=order_id, user_id=f"user-{order_id}", amount=600, currency="CNY", channel="card", provider="sim",
        provider_txn_id=f"tx-{order_id}", paid_at=at,
    )  # fmt: skip


async def refund_under_way(broker: Broker, prefix: str, *order_ids: str) -> None:
    """Each order paid, its credit refused for good: until the reconciler has sent its IssueRefund."""
    now = datetime.now(UTC)
    payments = [paid(o, now) for o in order_ids]
    await publish(broker, Topic.PAYMENTS_EVENTS.qualified(prefix), *payments)
    refusals = [
        CreditRejected(order_id=o, user_id=f"user-{o}", reason="wallet frozen", final=True, rejected_at=now)
        for o in order_ids
    ]
    # The two topics are joined as they come: a refusal read before its order's payment is only noted (the order is
    # not paid yet), so the refusal is sent again until the refund shows; a final refusal starts one refund at most.
    deadline = time.monotonic() + STARTUP_S
    while True:
        await publish(broker, Topic.LEDGER_EVENTS.qualified(prefix), *refusals)
        try:
            await read_until(
                broker.bootstrap,
                Topic.PAYMENTS_COMMANDS.qualified(prefix),
                lambda records: all(of_order(records, IssueRefund, o) for o in order_ids),
                timeout_s=10,
            )
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def refund_failed(order_id: str) -> RefundFailed:
    return RefundFailed(
        order_id=order_id, user_id=f"user-{order_id}", reason="card closed", failed_at=datetime.now(UTC)
    )


async def test_a_refund_that_fails_asks_support_for_a_needs_support_case_that_pages_once(
    broker: Broker, reconciler: Child, isolation: str
) -> None:
    prefix, order_id, after = f"{isolation}.", f"ord_{uuid.uuid4().hex}", f"ord_{uuid.uuid4().hex}"
    await refund_under_way(broker, prefix, order_id, after)
    # The repeat comes before `after`'s failure on the one partition: once `after`'s case is out, it was read.
    repeated = refund_failed(order_id)
    await publish(broker, Topic.PAYMENTS_EVENTS.qualified(prefix), repeated, repeated, refund_failed(after))
    records = await read_until(
        broker.bootstrap,
        Topic.SUPPORT_CASES.qualified(prefix),
        lambda records: bool(of_order(records, CaseRequested, after)),
        timeout_s=STARTUP_S,
    )
    [case] = of_order(records, CaseRequested, order_id)
    assert isinstance(case, CaseRequested)
    assert (case.user_id, case.kind, case.severity) == (f"user-{order_id}", CaseKind.NEEDS_SUPPORT, CaseSeverity.PAGE)
    assert case.reason == "refund failed: card closed"
    assert reconciler.alive(), reconciler.tail()
