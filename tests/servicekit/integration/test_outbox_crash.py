"""A crash between the database commit and the publish, as a real process killed with SIGKILL: after a restart
the event is on the real broker exactly once; a crash after the broker's ack but before the relay's commit
publishes the event again under the same event id, which consumers drop."""

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from contracts.codec import decode
from contracts.topics import Topic
from servicekit.kafka import ensure_topics
from servicekit.postgres import create_pool, migrate
from tests.conftest import ROOT, Broker
from tests.kafka_reader import read_all

ORDERS = [f"ord_crash_{i}" for i in range(5)]


@pytest.fixture
async def outbox(broker: Broker, database_url: str, isolation: str) -> AsyncIterator[tuple[asyncpg.Pool, list[str]]]:
    prefix = f"{isolation}."
    await ensure_topics(broker.bootstrap, [t.qualified(prefix) for t in Topic], 3)
    pool = await create_pool(database_url, isolation, min_size=1, max_size=2)
    await migrate(pool)
    args = [database_url, isolation, prefix, broker.bootstrap, "1" if broker.idempotence else "0"]
    yield pool, args
    await pool.close()


async def child(mode: str, args: list[str], *orders: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.servicekit.outbox_child", mode, *args, *orders,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def reaches(process: asyncio.subprocess.Process, word: str, timeout_s: float = 60) -> None:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout_s)
    assert line.decode().strip() == word, f"the child said {line!r}, not {word!r}"


async def sigkill(process: asyncio.subprocess.Process) -> None:
    os.kill(process.pid, signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL


async def restart_relay(args: list[str]) -> None:
    relay = await child("relay", args)
    await reaches(relay, "drained")
    assert await relay.wait() == 0


async def test_a_process_killed_after_commit_before_publish_delivers_each_event_once_after_restart(
    outbox: tuple[asyncpg.Pool, list[str]], broker: Broker
) -> None:
    pool, args = outbox
    writer = await child("commit", args, *ORDERS)
    await reaches(writer, "committed")
    await sigkill(writer)  # committed, nothing published yet
    assert await pool.fetchval("SELECT count(*) FROM outbox") == len(ORDERS)

    await restart_relay(args)

    records = await read_all(broker.bootstrap, Topic.PAYMENTS_EVENTS.qualified(args[2]))
    assert sorted(r.key for r in records) == sorted(o.encode() for o in ORDERS)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_a_relay_killed_after_the_brokers_ack_publishes_again_under_the_same_event_ids(
    outbox: tuple[asyncpg.Pool, list[str]], broker: Broker
) -> None:
    pool, args = outbox
    writer = await child("commit", args, *ORDERS)
    await reaches(writer, "committed")
    await sigkill(writer)
    relay = await child("relay-then-hang", args)
    await reaches(relay, "published")
    await sigkill(relay)  # acknowledged by the broker, rows not deleted: they stay for the next relay

    await restart_relay(args)

    records = await read_all(broker.bootstrap, Topic.PAYMENTS_EVENTS.qualified(args[2]))
    event_ids: dict[bytes, set[str]] = {}
    for record in records:
        event_ids.setdefault(record.key or b"", set()).add(decode(record.value, record.headers)[1].event_id)
    assert len(records) == 2 * len(ORDERS)  # at least once: every event twice ...
    assert sorted(event_ids) == sorted(o.encode() for o in ORDERS)
    assert all(len(ids) == 1 for ids in event_ids.values())  # ... under one event id, which consumers dedupe
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
