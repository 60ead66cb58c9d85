"""Services outlive their dependencies: started with the broker stopped, the ledger answers /healthz 503 naming
the broker (the database apart, ready), and says so in its metrics (credited_dependency_ready, which DependencyAway
pages on), and once the broker is up it becomes ready and consumes. A consumer whose
database connection is terminated in the middle of a batch dead-letters nothing and handles the message after.
Real PostgreSQL and a real broker of the kind CREDITED_TEST_BROKER names (its own, so it can be stopped)."""

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.codec import Envelope, encode, envelope_for
from contracts.events import PaymentSucceeded
from contracts.topics import Topic
from credited.stack.processes import Child, free_port, wait_for
from servicekit.consumer import KafkaConsumerLoop
from servicekit.kafka import DeadLetterPublisher, Delivery, KafkaPublisher, ensure_topics
from servicekit.postgres import create_pool, migrate
from servicekit.retrying import Readiness
from servicekit.uow import PostgresUnitOfWork, batch, no_relay
from tests.conftest import Broker
from tests.kafka_reader import read_until
from tests.servicekit.events import paid
from tests.stoppable_broker import StoppableBroker, health, service_env

STARTUP_S = 120  # deadlines, not sleeps: a JVM broker and these processes share two loaded cores


def dependencies_ready(child: Child) -> dict[str, float]:
    """credited_dependency_ready by dependency, as Prometheus scrapes it from the service's metrics port."""
    port = next(value for name, value in child.env.items() if name.endswith("_METRICS_PORT"))
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    [family] = [f for f in text_string_to_metric_families(text) if f.name == "credited_dependency_ready"]
    return {sample.labels["dependency"]: sample.value for sample in family.samples}


def waiting_for_the_broker_only(port: int) -> bool:
    answer = health(port)
    if answer is None or answer[0] != 503:
        return False
    dependencies = answer[1]["dependencies"]
    assert isinstance(dependencies, dict)
    return bool(dependencies["database"]["ready"]) and not dependencies["broker"]["ready"]


@pytest.fixture
def ledger_process(
    own_broker: StoppableBroker, database_url: str, isolation: str, tmp_path: Path
) -> Iterator[tuple[Child, int, str]]:
    port, schema = free_port(), f"{isolation}_ledger"
    env = service_env("ledger", own_broker.bootstrap, own_broker.kind, database_url, isolation, http_port=str(port))
    child = Child("ledger", [sys.executable, "-m", "ledger"], log_path=tmp_path / "ledger.log", env=env)
    child.start()
    yield child, port, schema
    child.stop()


async def test_a_ledger_started_with_the_broker_stopped_says_so_then_becomes_ready_and_credits_once_it_is_up(
    own_broker: StoppableBroker, ledger_process: tuple[Child, int, str], database_url: str, isolation: str
) -> None:
    ledger, port, schema = ledger_process
    away = lambda: waiting_for_the_broker_only(port)  # noqa: E731
    await asyncio.to_thread(wait_for, away, timeout_s=STARTUP_S, what="503 naming the broker", child=ledger)
    answer = health(port)
    assert answer is not None and answer[0] == 503, answer
    assert answer[1]["error"] == "not_ready" and "broker" in str(answer[1]["detail"]), answer
    assert dependencies_ready(ledger) == {"database": 1, "broker": 0}
    assert ledger.alive(), ledger.tail()

    await asyncio.to_thread(own_broker.start)
    ready = lambda: (health(port) or (0, {}))[0] == 200  # noqa: E731
    await asyncio.to_thread(wait_for, ready, timeout_s=STARTUP_S, what="ledger ready", child=ledger)
    assert dependencies_ready(ledger) == {"database": 1, "broker": 1}
    order_id = f"ord_{isolation}"
    publisher = KafkaPublisher(own_broker.bootstrap, idempotence=own_broker.kind == "apache", client_id="test")
    await publisher.start()
    try:
        await publisher.publish(Topic.PAYMENTS_EVENTS.qualified(f"{isolation}."), encode(*_signed(paid(order_id))))
    finally:
        await publisher.stop()
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:

        def credited() -> bool:
            count = asyncio.run_coroutine_threadsafe(
                conn.fetchval("SELECT count(*) FROM transactions WHERE order_id = $1", order_id), loop
            )
            return bool(count.result(timeout=10) == 1)

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(wait_for, credited, timeout_s=STARTUP_S, what="the credit", child=ledger)
    finally:
        await conn.close()
    assert ledger.alive() and ledger.exit_code() is None, ledger.tail()


def _signed(message: PaymentSucceeded) -> tuple[PaymentSucceeded, Envelope]:
    return message, envelope_for(message, producer="payments")


class TerminatedOnce:
    """Writes each order of the batch; on its first call has PostgreSQL terminate the batch's own connection
    (as an administrator or a failover would), so the transaction dies in the middle."""

    def __init__(self, pool: asyncpg.Pool, readiness: Readiness) -> None:
        self.pool, self.readiness = pool, readiness
        self.calls = 0
        self.readiness_on_retry: dict[str, dict[str, object]] = {}

    async def __call__(self, deliveries: Sequence[Delivery]) -> None:
        self.calls += 1
        # Joins the poll's batch.
        async with PostgresUnitOfWork(self.pool, producer="test", topic_prefix="", on_commit=no_relay) as tx:
            if self.calls == 1:
                pid = await tx.conn.fetchval("SELECT pg_backend_pid()")
                await self.pool.execute("SELECT pg_terminate_backend($1)", pid)
            else:
                self.readiness_on_retry = self.readiness.report()
            for message, _ in deliveries:
                await tx.conn.execute("INSERT INTO handled (order_id) VALUES ($1)", message.order_id)


@pytest.fixture
async def pool(database_url: str, isolation: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, isolation)
    await migrate(pool)
    await pool.execute("CREATE TABLE handled (order_id text NOT NULL)")
    yield pool
    await pool.close()


async def test_a_consumer_whose_connection_is_terminated_mid_batch_dead_letters_nothing_and_handles_it_after(
    broker: Broker, pool: asyncpg.Pool, isolation: str
) -> None:
    prefix = f"{isolation}."
    topic = Topic.PAYMENTS_EVENTS.qualified(prefix)
    await ensure_topics(broker.bootstrap, [t.qualified(prefix) for t in Topic], 1)
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test", topic_prefix=prefix)
    await publisher.start()
    readiness = Readiness()
    handler = TerminatedOnce(pool, readiness)
    loop = KafkaConsumerLoop(
        bootstrap=broker.bootstrap,
        group_id=f"{isolation}-g",
        topics=[topic],
        handler=handler,
        dead_letters=DeadLetterPublisher(publisher),
        batch_scope=lambda: batch(pool),
        readiness=readiness,
    )
    await loop.start()
    task = asyncio.create_task(loop.run())
    try:
        await publisher.publish(topic, encode(*_signed(paid("ord_terminated"))))
        async with asyncio.timeout(STARTUP_S):
            while await pool.fetchval("SELECT count(*) FROM handled") < 1:
                await asyncio.sleep(0.05)
            while loop.consumed_total < 1:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await loop.stop()
    until = time.monotonic() + 3
    dead = await read_until(broker.bootstrap, Topic.DEAD_LETTER.qualified(prefix), lambda _: time.monotonic() > until)
    await publisher.stop()
    assert handler.calls >= 2, "the batch was not tried again after its connection was terminated"
    assert "database" in handler.readiness_on_retry, "the database was not reported away while the batch waited"
    assert readiness.ready, readiness.report()
    assert loop.dead_lettered_total == 0 and dead == []
    assert await pool.fetchval("SELECT count(*) FROM handled WHERE order_id = 'ord_terminated'") == 1
