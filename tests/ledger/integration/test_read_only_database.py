"""A read-only database (a failover: the primary demoted, a replica not yet promoted) is an infrastructure fault,
not a bad message: the ledger process waits it out, says so on /healthz, dead-letters nothing, and credits the
payment once the database takes writes again. Real PostgreSQL, the session's real broker, the ledger as a process.

Only the ledger's own role is made read-only (`ALTER ROLE ... SET default_transaction_read_only`, its sessions
ended so it reconnects into the setting), so other tests sharing the server are not touched."""

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from contracts.codec import encode, envelope_for
from contracts.topics import Topic
from credited.stack.processes import Child, free_port, wait_for
from servicekit.kafka import KafkaPublisher, ensure_topics
from tests.conftest import Broker
from tests.kafka_reader import read_until
from tests.servicekit.events import paid
from tests.stoppable_broker import service_env

STARTUP_S = 120  # deadlines, not sleeps: the broker and these processes share two loaded cores
READ_ONLY_S = 12  # long past the few seconds the ledger used to retry before dead-lettering


def as_role(database_url: str, role: str, password: str) -> str:
    parts = urlsplit(database_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{role}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.fixture
async def admin(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def ledger_role(admin: asyncpg.Connection, isolation: str) -> AsyncIterator[str]:
    role = f"{isolation}_ledger"
    await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    database = await admin.fetchval("SELECT current_database()")
    await admin.execute(f'GRANT CREATE ON DATABASE "{database}" TO {role}')
    yield role
    await admin.execute(f"ALTER ROLE {role} RESET default_transaction_read_only")
    await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)


@pytest.fixture
def ledger(broker: Broker, database_url: str, ledger_role: str, isolation: str, tmp_path: Path) -> Iterator[Child]:
    kind = broker.kind if broker.kind == "apache" else "embedded"
    env = service_env("ledger", broker.bootstrap, kind, as_role(database_url, ledger_role, "pw"), isolation)
    env["LEDGER_HTTP_PORT"] = str(free_port())
    child = Child("ledger", [sys.executable, "-m", "ledger"], log_path=tmp_path / "ledger.log", env=env)
    child.start()
    yield child
    child.stop()


def health(child: Child) -> tuple[int, dict[str, object]] | None:
    try:
        answer = httpx.get(f"http://127.0.0.1:{child.env['LEDGER_HTTP_PORT']}/healthz", timeout=2)
    except httpx.HTTPError:
        return None
    return answer.status_code, answer.json()


def database_away(child: Child) -> bool:
    answer = health(child)
    if answer is None or answer[0] != 503:
        return False
    dependencies = answer[1]["dependencies"]
    assert isinstance(dependencies, dict)
    return not dependencies["database"]["ready"]


async def credits(admin: asyncpg.Connection, schema: str, order_id: str) -> int:
    count: int = await admin.fetchval(f"SELECT count(*) FROM {schema}.transactions WHERE order_id = $1", order_id)
    return count


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_a_read_only_database_makes_the_ledger_wait_not_dead_letter_and_it_credits_once_writable_again(
    broker: Broker, ledger: Child, ledger_role: str, admin: asyncpg.Connection, isolation: str
) -> None:
    prefix, schema = f"{isolation}.", f"{isolation}_ledger"
    await ensure_topics(broker.bootstrap, [t.qualified(prefix) for t in Topic], 1)
    ready = lambda: (health(ledger) or (0, {}))[0] == 200  # noqa: E731
    await asyncio.to_thread(wait_for, ready, timeout_s=STARTUP_S, what="ledger ready", child=ledger)

    # The failover: every new transaction of the ledger's role read-only, and its sessions ended.
    await admin.execute(f"ALTER ROLE {ledger_role} SET default_transaction_read_only = on")
    await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", ledger_role)
    order_id = f"ord_{isolation}"
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test")
    await publisher.start()
    try:
        message = paid(order_id)
        await publisher.publish(
            Topic.PAYMENTS_EVENTS.qualified(prefix), encode(message, envelope_for(message, producer="payments"))
        )
    finally:
        await publisher.stop()
    away = lambda: database_away(ledger)  # noqa: E731
    await asyncio.to_thread(wait_for, away, timeout_s=STARTUP_S, what="503 naming the database", child=ledger)
    await asyncio.sleep(READ_ONLY_S)
    assert ledger.alive(), ledger.tail()
    assert await credits(admin, schema, order_id) == 0
    assert database_away(ledger), health(ledger)

    # The new primary: writes taken again.
    await admin.execute(f"ALTER ROLE {ledger_role} RESET default_transaction_read_only")
    await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", ledger_role)
    deadline = time.monotonic() + STARTUP_S
    while await credits(admin, schema, order_id) == 0:
        assert time.monotonic() < deadline, f"never credited after the database took writes again\n{ledger.tail()}"
        assert ledger.alive(), ledger.tail()
        await asyncio.sleep(0.2)
    await asyncio.to_thread(wait_for, ready, timeout_s=STARTUP_S, what="ledger ready again", child=ledger)

    assert await credits(admin, schema, order_id) == 1
    until = time.monotonic() + 3
    dead = await read_until(broker.bootstrap, Topic.DEAD_LETTER.qualified(prefix), lambda _: time.monotonic() > until)
    assert dead == [], [dict(r.headers).get("dlq_reason") for r in dead]
    assert ledger.alive() and ledger.exit_code() is None, ledger.tail()
