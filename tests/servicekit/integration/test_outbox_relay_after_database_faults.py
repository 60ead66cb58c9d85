"""Outbox relay under database and broker faults. Real PostgreSQL, the session's broker."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from contracts.topics import Topic
from servicekit.kafka import KafkaPublisher, ensure_topics
from servicekit.outbox import OutboxRelay
from servicekit.postgres import create_pool, migrate
from servicekit.uow import PostgresUnitOfWork
from tests.conftest import Broker
from tests.servicekit.events import paid


@pytest.fixture
async def single_session_pool(broker: Broker, database_url: str, isolation: str) -> AsyncIterator[asyncpg.Pool]:
    prefix = f"{isolation}."
    await ensure_topics(broker.bootstrap, [t.qualified(prefix) for t in Topic], 1)
    pool = await create_pool(database_url, isolation, min_size=1, max_size=1)
    await migrate(pool)
    yield pool
    await pool.close()


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_rows_orphaned_by_a_database_restart_are_published_even_when_the_new_session_got_the_same_backend_pid(
    single_session_pool: asyncpg.Pool, broker: Broker, database_url: str, isolation: str
) -> None:
    """A relay's claimed rows are marked only with its backend pid. When PostgreSQL restarts (in a container its
    pids start again from the same small numbers) while a relay holds claims it could not delete, the relay's new
    session - or any other long-lived session - can get the same pid. _RELEASE_ORPHANS then sees the pid alive and
    never gives the rows back, and the relay never claims them (they are not NULL): the events (a PaymentSucceeded,
    a CreditPosted) stay unpublished for as long as that session lives, so a paid top-up is never credited."""
    pool, prefix = single_session_pool, f"{isolation}."
    async with PostgresUnitOfWork(pool, producer="test", topic_prefix=prefix, on_commit=lambda: None) as tx:
        tx.publish(Topic.PAYMENTS_EVENTS, paid("ord_before_restart"))
    # The claim a relay made before the restart, by the pid the one pooled session has after it.
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE outbox SET claimed_by = pg_backend_pid(), claimed_session = now() - interval '1 hour'"
        )  # the session that claimed it started before the restart
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="after-restart")
    await publisher.start()
    relay = OutboxRelay(pool, publisher, poll_interval_s=0.1, orphan_check_s=0.2)
    running = asyncio.create_task(relay.run())
    observer = await asyncpg.connect(database_url, server_settings={"search_path": isolation})
    try:
        published = await until(lambda: observer.fetchval("SELECT count(*) = 0 FROM outbox"), timeout_s=15)
        left = await observer.fetch("SELECT id, claimed_by FROM outbox")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await publisher.stop()
        await observer.close()
    assert published, f"the row orphaned by the restart was never published in 15 s: {[dict(r) for r in left]}"


async def test_a_relay_that_waited_for_a_stopped_database_reports_the_service_ready_once_the_database_is_back(
    broker: Broker, database_url: str, isolation: str
) -> None:
    """While PostgreSQL is stopped, the relay's reconnects fail with ConnectionRefusedError, which classify() (called
    without a dependency in OutboxRelay._after) files under `network`. The relay only ever declares `database` and
    `broker` back (_claim, _acknowledged), so the `network` entry it left stays for good: after the database returns
    and everything works again, /healthz keeps answering 503 "waiting for network", and compose, a load balancer or
    `credited up` keep the healthy service out of rotation (or restart it) until someone restarts it by hand."""
    from servicekit.postgres import lazy_pool
    from servicekit.retrying import Readiness
    from tests.servicekit.pg_proxy import PostgresProxy

    prefix = f"{isolation}."
    await ensure_topics(broker.bootstrap, [t.qualified(prefix) for t in Topic], 1)
    direct = await create_pool(database_url, isolation, min_size=1, max_size=2)
    await migrate(direct)
    proxy = PostgresProxy(database_url)
    await proxy.up()
    pool = await lazy_pool(proxy.dsn, isolation)
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="relay")
    await publisher.start()
    readiness = Readiness()
    relay = OutboxRelay(pool, publisher, poll_interval_s=0.1, readiness=readiness)
    running = asyncio.create_task(relay.run())

    async def write(order_id: str) -> None:
        async with PostgresUnitOfWork(direct, producer="test", topic_prefix=prefix, on_commit=relay.wake) as tx:
            tx.publish(Topic.PAYMENTS_EVENTS, paid(order_id))

    async def drained() -> bool:
        return bool(await direct.fetchval("SELECT count(*) = 0 FROM outbox"))

    try:
        await write("ord_before")
        assert await until(drained, timeout_s=30), "the relay never published before the outage"
        await proxy.down()  # PostgreSQL stops
        assert await until(lambda: asyncio.sleep(0, not readiness.ready), timeout_s=15), "the outage went unnoticed"
        away_during = readiness.report()
        await asyncio.sleep(2)
        await proxy.up()  # PostgreSQL is back
        await write("ord_after")
        assert await until(drained, timeout_s=30), "the relay never published after the outage"
        back = await until(lambda: asyncio.sleep(0, readiness.ready), timeout_s=15)
        status = readiness.health()
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await publisher.stop()
        await proxy.down()
        await pool.close()
        await direct.close()
    assert back, (
        f"the database is back and the relay publishes, but /healthz still answers {status} "
        f"(during the outage: {away_during})"
    )
