"""A service stops gracefully on SIGTERM: the ledger, with HTTP requests and a poll in hand (both held up by a
lock on its accounts table), stops taking connections at once, answers every request sent before the signal,
handles and commits the poll, publishes what it wrote to its outbox, and exits 0 within its grace period.
Real PostgreSQL and the session's broker (CREDITED_TEST_BROKER)."""

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.codec import encode, envelope_for
from contracts.topics import Topic
from credited.keys import create_development_key
from credited.stack.processes import Child, free_port, wait_for
from servicekit.kafka import KafkaPublisher
from servicekit.runner import CLOSE_S
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_until
from tests.servicekit.events import paid

STARTUP_S = 120  # deadlines, not sleeps: a JVM broker and these processes share two loaded cores
GRACE_S = 10.0
REQUESTS = 4
ORDERS = 20


@pytest.fixture
async def api_key(database_url: str, isolation: str, tmp_path: Path) -> dict[str, str]:
    """The Authorization header of a key with every scope, in the ledger's identity schema."""
    key = await create_development_key(database_url, tmp_path / "dev-keys.json", schema=f"{isolation}_identity")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def start_ledger(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> Iterator[Callable[[float], tuple[Child, int]]]:
    """Starts the ledger as a process with a stop grace period of `grace_s`; ready when it returns."""
    children: list[Child] = []

    def start(grace_s: float) -> tuple[Child, int]:
        port = free_port()
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CREDITED_", "LEDGER_"))}
        env = {
            **inherited,
            "CREDITED_ENV": "development",
            "KAFKA_BOOTSTRAP": broker.bootstrap,
            "KAFKA_BROKER": "apache" if broker.idempotence else "tansu",
            "DATABASE_URL": database_url,
            "CREDITED_TOPIC_PREFIX": f"{isolation}.",
            "CREDITED_TOPIC_PARTITIONS": "1",
            "CREDITED_STOP_GRACE_S": str(grace_s),
            "LEDGER_HTTP_PORT": str(port),
            "LEDGER_METRICS_PORT": str(free_port()),  # its default, the HTTP port + 1000, nobody reserved
            "LEDGER_DB_SCHEMA": f"{isolation}_ledger",
            "CREDITED_IDENTITY_SCHEMA": f"{isolation}_identity",
        }
        child = Child("ledger", [sys.executable, "-m", "ledger"], log_path=tmp_path / "ledger.log", env=env)
        child.start()
        children.append(child)
        wait_for(lambda: answers_health(port), timeout_s=STARTUP_S, what="ledger ready", child=child)
        return child, port

    yield start
    for child in children:
        child.stop(signal.SIGKILL)


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


async def waiting_on_locks(conn: asyncpg.Connection, least: int) -> bool:
    """Whether at least `least` database sessions wait for a lock."""
    return int(await conn.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted")) >= least


def answers_health(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def committed(bootstrap: str, group: str, topic: str) -> int | None:
    """The group's committed offset of the topic's one partition (what its next member starts from)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(TopicPartition(topic, 0))
        return offset
    finally:
        await consumer.stop()


async def test_sigterm_answers_the_requests_in_flight_commits_the_poll_in_hand_and_exits_0_within_the_grace(
    start_ledger: Callable[[float], tuple[Child, int]],
    broker: Broker,
    database_url: str,
    isolation: str,
    api_key: dict[str, str],
) -> None:
    child, port = await asyncio.to_thread(start_ledger, GRACE_S)
    prefix, schema = f"{isolation}.", f"{isolation}_ledger"
    payments = Topic.PAYMENTS_EVENTS.qualified(prefix)
    lock = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    client = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=REQUESTS), headers=api_key)
    try:
        holding = lock.transaction()
        await holding.start()
        await lock.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        await _publish(broker, payments, [f"ord_{isolation}_{n}" for n in range(ORDERS)])
        asked = [
            asyncio.create_task(client.get(f"http://127.0.0.1:{port}/v1/wallets/user-{n}")) for n in range(REQUESTS)
        ]
        # every request and the consumer's batch are waiting on the lock: in flight when the signal comes
        await eventually(lambda: waiting_on_locks(lock, REQUESTS + 1), timeout_s=STARTUP_S)

        signalled = time.monotonic()
        os.kill(child.pid, signal.SIGTERM)
        await eventually(lambda: refuses_connections(port), timeout_s=GRACE_S)
        assert child.alive(), "stopped before finishing the work in hand:\n" + child.tail()
        await holding.rollback()

        answers = await asyncio.gather(*asked, return_exceptions=True)
        await asyncio.to_thread(wait_for, lambda: not child.alive(), timeout_s=GRACE_S + CLOSE_S, what="exit")
        took = time.monotonic() - signalled
    finally:
        await client.aclose()
        await lock.close()

    assert [a.status_code if isinstance(a, httpx.Response) else repr(a) for a in answers] == [200] * REQUESTS
    assert child.exit_code() == 0, child.tail()
    assert took < GRACE_S + CLOSE_S
    assert "cutting short" not in child.log_path.read_text()
    # the poll in hand was handled and its offsets committed: a next instance starts after it
    books = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        credited = int(await books.fetchval("SELECT count(*) FROM transactions WHERE kind = 'credit'"))
        outbox = int(await books.fetchval("SELECT count(*) FROM outbox"))
    finally:
        await books.close()
    assert credited > 0
    assert await committed(broker.bootstrap, f"{prefix}ledger.payments", payments) == credited
    # and what it wrote to the outbox was published before it exited
    assert outbox == 0
    posted = await read_until(
        broker.bootstrap,
        Topic.LEDGER_EVENTS.qualified(prefix),
        lambda records: sum(dict(r.headers).get("event_type") == b"CreditPosted" for r in records) >= credited,
        timeout_s=30,
    )
    assert sum(dict(r.headers).get("event_type") == b"CreditPosted" for r in posted) == credited


async def _publish(broker: Broker, topic: str, order_ids: list[str]) -> None:
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test")
    await publisher.start()
    try:
        for order_id in order_ids:
            message = paid(order_id)
            await publisher.publish(topic, encode(message, envelope_for(message, producer="payments")))
    finally:
        await publisher.stop()


async def test_work_still_held_up_past_the_grace_is_cut_short_and_logged_and_the_service_exits_all_the_same(
    start_ledger: Callable[[float], tuple[Child, int]],
    broker: Broker,
    database_url: str,
    isolation: str,
    api_key: dict[str, str],
) -> None:
    grace_s = 2.0
    child, port = await asyncio.to_thread(start_ledger, grace_s)
    lock = await asyncpg.connect(database_url, server_settings={"search_path": f"{isolation}_ledger"})
    try:
        async with lock.transaction(), httpx.AsyncClient(timeout=60, headers=api_key) as client:
            await lock.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
            asked = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/v1/wallets/held-up"))
            await _publish(broker, Topic.PAYMENTS_EVENTS.qualified(f"{isolation}."), [f"ord_{isolation}"])
            await eventually(lambda: waiting_on_locks(lock, 2), timeout_s=STARTUP_S)  # the request and the poll
            signalled = time.monotonic()
            os.kill(child.pid, signal.SIGTERM)
            await asyncio.to_thread(wait_for, lambda: not child.alive(), timeout_s=grace_s + CLOSE_S + 5, what="exit")
            took = time.monotonic() - signalled
            answer = await asyncio.gather(asked, return_exceptions=True)
    finally:
        await lock.close()

    assert took < grace_s + CLOSE_S, child.tail()
    assert child.exit_code() == 0, child.tail()
    log = child.log_path.read_text()
    assert "timeout graceful shutdown exceeded" in log, child.tail()  # uvicorn names the request it cancelled
    assert "cutting short what is still running: Infrastructure._work" in log, child.tail()
    assert f"consumer {isolation}.ledger.payments: stopping cut its poll in hand short (1 records" in log, child.tail()
    held_up = answer[0]
    assert isinstance(held_up, httpx.HTTPError) or held_up.status_code >= 500, held_up
