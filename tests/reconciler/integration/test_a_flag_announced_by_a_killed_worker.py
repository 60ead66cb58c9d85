"""A worker killed after its timer announced a flag but before the order's changelog record was acknowledged: the
worker that takes the partition over restores the order as it was before the flag, and the credit the retry brought
reaches it first. The status it then announces must come after the `delayed` the killed worker sent, or every
reader keeping the highest sequence (payments, the notifier) drops it and the user is left at `delayed`.

Real broker, two worker processes in one group; producers linger a second (KAFKA_LINGER_MS), so that the flag's
changelog record waits a second after its announcements are on the broker, and the kill lands in between."""

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiokafka import ConsumerRecord

from contracts.base import Message
from contracts.codec import decode
from contracts.commands import RetryCredit
from contracts.events import OrderStatus, OrderStatusChanged
from contracts.topics import Topic
from credited.stack.processes import Child, free_port, wait_for
from tests.conftest import Broker
from tests.kafka_reader import read_all, read_until
from tests.reconciler.integration.test_retention_after_restart import credit, payment, ready, write
from tests.stoppable_broker import service_env

STARTUP_S = 150
LINGER_MS = "1000"


def worker(broker: Broker, database_url: str, isolation: str, tmp_path: Path, name: str) -> Child:
    env = service_env(
        "reconciler", broker.bootstrap, broker.kind, database_url, isolation,
        http_port=str(free_port()), threshold_s="1", retry_backoff_s="60", data_dir=str(tmp_path / name),
    )  # fmt: skip
    env["KAFKA_LINGER_MS"] = LINGER_MS
    return Child(name, [sys.executable, "-m", "reconciler"], log_path=tmp_path / f"{name}.log", env=env)


def partitions_of(child: Child) -> float:
    """The worker's reconciler_assigned_partitions gauge (0 if it does not answer)."""
    assert child.env is not None
    try:
        text = httpx.get(f"http://127.0.0.1:{child.env['RECONCILER_METRICS_PORT']}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    lines = [line for line in text.splitlines() if line.startswith("reconciler_assigned_partitions ")]
    return float(lines[0].split()[1]) if lines else 0.0


def messages(records: list[ConsumerRecord[bytes, bytes]]) -> list[Message]:
    return [decode(r.value, r.headers)[0] for r in records if r.value is not None]


def statuses_of(order_id: str, records: list[ConsumerRecord[bytes, bytes]]) -> list[OrderStatusChanged]:
    return [m for m in messages(records) if isinstance(m, OrderStatusChanged) and m.order_id == order_id]


def held_by_a_reader(changes: list[OrderStatusChanged]) -> OrderStatus:
    """The status a reader holds that keeps a change only if its sequence is higher than the one it holds."""
    held, sequence = OrderStatus.PAID, 0
    for change in changes:
        if change.sequence > sequence:
            held, sequence = change.status, change.sequence
    return held


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_a_credit_read_by_the_next_owner_after_a_flag_announced_by_a_killed_worker_reaches_the_user(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> None:
    prefix = f"{isolation}."
    payments, credits = Topic.PAYMENTS_EVENTS.qualified(prefix), Topic.LEDGER_EVENTS.qualified(prefix)
    commands, status = Topic.LEDGER_COMMANDS.qualified(prefix), Topic.ORDERS_STATUS.qualified(prefix)
    changelog = f"{prefix}credited-reconciler-order-state-changelog"
    order = f"ord_{isolation}_late"
    workers = [worker(broker, database_url, isolation, tmp_path, name) for name in ("first", "second")]
    try:
        for child in workers:
            child.start()
            await ready(child)
        owns = lambda: sum(partitions_of(c) for c in workers) == 1  # noqa: E731  # the one partition, settled
        await asyncio.to_thread(wait_for, owns, timeout_s=STARTUP_S, what="one worker owning the partition")
        owner, other = workers if partitions_of(workers[0]) == 1 else workers[::-1]

        await write(broker.bootstrap, (payments, payment(order, datetime.now(UTC))))  # never credited in time
        retried = lambda rs: any(isinstance(m, RetryCredit) and m.order_id == order for m in messages(rs))  # noqa: E731
        await read_until(broker.bootstrap, commands, retried, timeout_s=STARTUP_S)
        owner.kill()  # the flag is announced; its changelog record lingers in the producer
        # The ledger's answer to the retry: the order is credited, a few seconds late.
        await write(broker.bootstrap, (credits, credit(order, datetime.now(UTC) + timedelta(milliseconds=1))))

        closed = lambda rs: any(s.status is OrderStatus.CREDITED for s in statuses_of(order, rs))  # noqa: E731
        await read_until(broker.bootstrap, status, closed, timeout_s=STARTUP_S)
        assert other.alive(), other.tail()
    finally:
        for child in workers:
            child.stop()

    states = [r.value for r in await read_all(broker.bootstrap, changelog) if r.key == order.encode() and r.value]
    assert not any(b'"phase":"retrying"' in s for s in states), "the premise: the flag never reached the changelog"
    changes = statuses_of(order, await read_all(broker.bootstrap, status))
    told = [(c.sequence, c.status.value) for c in changes]
    assert (1, "delayed") in told, told
    assert held_by_a_reader(changes) in (OrderStatus.CREDITED, OrderStatus.COMPENSATED), told
