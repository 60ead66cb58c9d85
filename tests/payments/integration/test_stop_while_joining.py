"""SIGTERM to payments while it still joins its consumer groups (held up by a member of one of them that stopped
answering, as a copy of payments frozen during a rebalance): PostgreSQL is up, so an order placed meanwhile is
answered 201, and what it wrote to the outbox is published before payments exits 0 within its grace, not left for
the next start. Real PostgreSQL, the session's broker, payments as a process."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from contracts.topics import Topic
from credited.keys import create_development_key
from credited.stack.processes import Child, free_port, wait_for
from servicekit.kafka import ensure_topics
from servicekit.runner import CLOSE_S
from tests.conftest import Broker
from tests.kafka_reader import read_until
from tests.stoppable_broker import health, service_env

STARTUP_S = 120
GRACE_S = 10.0
FROZEN_MEMBER_S = 60_000
"""The frozen member's session and rebalance timeouts (ms): it holds the group's join up for the whole test."""
HOLDER = """
import asyncio, sys
from aiokafka import AIOKafkaConsumer

async def main() -> None:
    bootstrap, group, topic, timeout = *sys.argv[1:4], int(sys.argv[4])
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, session_timeout_ms=timeout,
        rebalance_timeout_ms=timeout, max_poll_interval_ms=timeout, heartbeat_interval_ms=1000,
    )
    await consumer.start()
    await consumer.getmany(timeout_ms=100)
    print("joined", flush=True)
    while True:
        await consumer.getmany(timeout_ms=1000)

asyncio.run(main())
"""


@pytest.fixture
def frozen_member(broker: Broker, isolation: str) -> Iterator[subprocess.Popen[str]]:
    """A member of payments' group on orders.status that joined, then stopped (SIGSTOP): a join after it waits for
    it to rejoin, which it never does."""
    prefix = f"{isolation}."
    asyncio.run(ensure_topics(broker.bootstrap, [t.qualified(prefix) for t in Topic], 1))
    group, topic = f"{prefix}payments.order-status", Topic.ORDERS_STATUS.qualified(prefix)
    argv = [sys.executable, "-c", HOLDER, broker.bootstrap, group, topic, str(FROZEN_MEMBER_S)]
    member = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert member.stdout is not None
        assert member.stdout.readline().strip() == "joined"
        member.send_signal(signal.SIGSTOP)
        yield member
    finally:
        member.kill()
        member.wait()


def joining(port: int) -> bool:
    """PostgreSQL up, and the broker connected but its consumer groups not joined yet."""
    answer = health(port)
    if answer is None or answer[0] != 503:
        return False
    dependencies = answer[1]["dependencies"]
    assert isinstance(dependencies, dict)
    return bool(dependencies["database"]["ready"]) and dependencies["broker"].get("reason") == (
        "joining the consumer groups"
    )


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_an_order_answered_while_payments_joins_its_groups_is_published_when_it_stops_then(
    broker: Broker,
    database_url: str,
    isolation: str,
    tmp_path: Path,
    children: list[Child],
    frozen_member: subprocess.Popen[str],
) -> None:
    prefix = f"{isolation}."
    key = await create_development_key(database_url, tmp_path / "dev-keys.json", schema=f"{isolation}_identity")
    port = free_port()
    env = service_env("payments", broker.bootstrap, broker.kind, database_url, isolation, http_port=str(port))
    env |= {"CREDITED_STOP_GRACE_S": str(GRACE_S), "PAYMENTS_PSP_SECRET_SIM": "joining-stop-psp-secret"}
    child = Child("payments", [sys.executable, "-m", "payments"], log_path=tmp_path / "payments.log", env=env)
    child.start()
    children.append(child)
    await asyncio.to_thread(
        wait_for, lambda: joining(port), timeout_s=STARTUP_S, what="payments joining its groups", child=child
    )

    order = {"user_id": f"user-{isolation}", "amount": 600, "currency": "CNY", "channel": "alipay"}
    async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
        answer = await client.post(f"http://127.0.0.1:{port}/v1/orders", json=order)
    assert answer.status_code == 201, answer.text
    assert joining(port), child.tail(60)  # still joining: nothing has relayed the outbox yet
    signalled = time.monotonic()
    os.kill(child.pid, signal.SIGTERM)
    await asyncio.to_thread(wait_for, lambda: not child.alive(), timeout_s=GRACE_S + 2 * CLOSE_S, what="exit")
    took = time.monotonic() - signalled

    assert child.exit_code() == 0, child.tail(60)
    assert took < GRACE_S + CLOSE_S, (took, child.tail(60))
    order_id = answer.json()["order_id"]
    published = await read_until(
        broker.bootstrap,
        Topic.PAYMENTS_EVENTS.qualified(prefix),
        lambda records: any(r.key == order_id.encode() for r in records),
        timeout_s=10,
    )
    keyed = [dict(r.headers)["event_type"] for r in published if r.key == order_id.encode()]
    assert keyed == [b"OrderPlaced"], child.tail(60)
