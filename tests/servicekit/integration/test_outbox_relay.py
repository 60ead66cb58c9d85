"""The outbox relay on the real PostgreSQL and broker: no transaction open while the broker answers, batches
sent while earlier ones wait for their acknowledgements, and no row taken by two live relays."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import pytest

from contracts.codec import Record
from contracts.topics import Topic
from servicekit.kafka import KafkaPublisher, ensure_topics
from servicekit.outbox import OutboxRelay
from servicekit.postgres import create_pool, migrate
from servicekit.uow import PostgresUnitOfWork
from tests.conftest import Broker
from tests.kafka_reader import read_until
from tests.servicekit.events import paid


class GatedPublisher(KafkaPublisher):
    """Publishes for real, but reports the broker's acknowledgements only once the gate opens."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = asyncio.Event()
        self.sent: list[int] = []

    async def send_each(self, entries: Sequence[tuple[str, Record]]) -> "list[asyncio.Future[Any]]":
        sends = await super().send_each(entries)
        self.sent.append(len(entries))

        async def after_the_gate(send: "asyncio.Future[Any]") -> Any:
            await self.gate.wait()
            return await send

        return [asyncio.ensure_future(after_the_gate(send)) for send in sends]


@pytest.fixture
async def kit(broker: Broker, database_url: str, isolation: str) -> AsyncIterator[tuple[asyncpg.Pool, str, Broker]]:
    prefix = f"{isolation}."
    await ensure_topics(broker.bootstrap, [t.qualified(prefix) for t in Topic], 3)
    pool = await create_pool(database_url, isolation)
    await migrate(pool)
    yield pool, prefix, broker
    await pool.close()


async def started(publisher: KafkaPublisher) -> KafkaPublisher:
    await publisher.start()
    return publisher


async def write(
    pool: asyncpg.Pool, prefix: str, orders: Sequence[str], on_commit: Callable[[], None] = lambda: None
) -> None:
    for order_id in orders:
        async with PostgresUnitOfWork(pool, producer="test", topic_prefix=prefix, on_commit=on_commit) as tx:
            tx.publish(Topic.PAYMENTS_EVENTS, paid(order_id))


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_relay_waiting_for_the_broker_holds_no_transaction_and_no_other_relay_takes_its_rows(kit) -> None:  # type: ignore[no-untyped-def]
    pool, prefix, broker = kit
    orders = [f"ord_wait_{i}" for i in range(10)]
    await write(pool, prefix, orders)
    gated = await started(GatedPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="gated"))
    other = await started(KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="other"))
    relay = asyncio.create_task(OutboxRelay(pool, gated, poll_interval_s=0.05).run())
    try:
        await until(lambda: pool.fetchval("SELECT count(*) = 10 FROM outbox WHERE claimed_by IS NOT NULL"), "a claim")
        await until(lambda: asyncio.sleep(0, bool(gated.sent)), "the batch handed to the producer")
        holder = await pool.fetchval("SELECT DISTINCT claimed_by FROM outbox")
        state = await pool.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", holder)
        assert state == "idle"  # not "idle in transaction": nothing is held open while the broker answers

        assert await OutboxRelay(pool, other).publish_batch() == 0  # a live relay's rows are its own
        gated.gate.set()
        await until(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"), "the rows deleted after the acks")
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        await gated.stop()
        await other.stop()
    records = await read_until(broker.bootstrap, Topic.PAYMENTS_EVENTS.qualified(prefix), lambda r: len(r) >= 10)
    assert sorted(r.key for r in records) == sorted(o.encode() for o in orders)


async def test_the_relay_sends_the_next_batches_while_earlier_ones_wait_for_their_acknowledgements(kit) -> None:  # type: ignore[no-untyped-def]
    pool, prefix, broker = kit
    orders = [f"ord_pipe_{i}" for i in range(30)]
    await write(pool, prefix, orders)
    gated = await started(GatedPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="gated"))
    relay = asyncio.create_task(OutboxRelay(pool, gated, batch_size=5, in_flight=3, poll_interval_s=0.05).run())
    try:
        await until(lambda: asyncio.sleep(0, len(gated.sent) >= 3), "three batches sent")
        await asyncio.sleep(0.2)  # room for a wrong fourth batch beyond the in-flight limit
        assert gated.sent == [5, 5, 5]  # sent before any acknowledgement, and no more than allowed
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 30  # nothing deleted before its ack
        gated.gate.set()
        await until(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"), "every row published")
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        await gated.stop()
    records = await read_until(broker.bootstrap, Topic.PAYMENTS_EVENTS.qualified(prefix), lambda r: len(r) >= 30)
    assert sorted(r.key for r in records) == sorted(o.encode() for o in orders)


async def test_rows_claimed_by_a_session_that_is_gone_are_published_by_another_relay(kit) -> None:  # type: ignore[no-untyped-def]
    pool, prefix, broker = kit
    await write(pool, prefix, ["ord_orphan"])
    gone = await pool.acquire()
    try:
        await gone.execute("UPDATE outbox SET claimed_by = pg_backend_pid()")
    finally:
        gone.terminate()  # the claiming relay's session ends, as when its process is killed
        await pool.release(gone)
    publisher = await started(KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="heir"))
    try:
        await until(lambda: OutboxRelay(pool, publisher).publish_batch(), "the orphaned row published")
    finally:
        await publisher.stop()
    records = await read_until(broker.bootstrap, Topic.PAYMENTS_EVENTS.qualified(prefix), lambda r: len(r) >= 1)
    assert [r.key for r in records] == [b"ord_orphan"]


class CountedRelay(OutboxRelay):
    """Counts its claims (each one statement: delete what was acknowledged, claim what is new)."""

    claims = 0

    async def _claim(self, conn, acked, limit):  # type: ignore[no-untyped-def]
        self.claims += 1
        return await super()._claim(conn, acked, limit)


async def test_at_a_trickle_of_commits_the_relay_deletes_what_was_acknowledged_with_its_next_claim(kit) -> None:  # type: ignore[no-untyped-def]
    pool, prefix, broker = kit
    publisher = await started(KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="trickle"))
    relay = CountedRelay(pool, publisher, poll_interval_s=60, delete_after_s=60)
    running = asyncio.create_task(relay.run())
    topic = Topic.PAYMENTS_EVENTS.qualified(prefix)
    orders = [f"ord_{i}" for i in range(8)]
    try:
        for n, order_id in enumerate(orders, start=1):
            await write(pool, prefix, [order_id], relay.wake)  # its commit wakes the relay, as in a service
            await read_until(broker.bootstrap, topic, lambda r, n=n: len(r) >= n)
        # one claim per commit (and one at the start), not two: each also deleted the rows acknowledged before it
        assert relay.claims <= len(orders) + 1, relay.claims
        # the last rows, acknowledged, are kept until the next claim
        assert 1 <= await pool.fetchval("SELECT count(*) FROM outbox") <= 2
        relay.wake()
        await until(lambda: _empty(pool), "the last acknowledged row deleted")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await publisher.stop()


async def test_acknowledged_rows_are_deleted_in_time_without_another_commit(kit) -> None:  # type: ignore[no-untyped-def]
    pool, prefix, broker = kit
    publisher = await started(KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="quiet"))
    relay = OutboxRelay(pool, publisher, poll_interval_s=60, delete_after_s=0.2)
    running = asyncio.create_task(relay.run())
    try:
        await write(pool, prefix, ["ord_alone"], relay.wake)  # its commit wakes the relay, as in a service
        await until(lambda: _empty(pool), "the acknowledged row deleted")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await publisher.stop()
    records = await read_until(broker.bootstrap, Topic.PAYMENTS_EVENTS.qualified(prefix), lambda r: len(r) >= 1)
    assert [r.key for r in records] == [b"ord_alone"]


async def _empty(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT count(*) = 0 FROM outbox"))


async def test_an_outbox_write_notifies_nobody_so_its_commit_takes_no_cluster_wide_lock(kit) -> None:  # type: ignore[no-untyped-def]
    pool, prefix, _ = kit
    heard: list[str] = []

    def hear(_conn: object, _pid: int, channel: str, _payload: str) -> None:
        heard.append(channel)

    async with pool.acquire() as conn:
        user_triggers = "SELECT tgname FROM pg_trigger WHERE tgrelid = 'outbox'::regclass AND NOT tgisinternal"
        assert await conn.fetch(user_triggers) == []
        channel = f"outbox_{await conn.fetchval('SELECT current_schema()')}"
        await conn.add_listener(channel, hear)
        try:
            await write(pool, prefix, ["ord_quiet"])
            await conn.execute("SELECT pg_sleep(0.2)")  # a notification, had there been one, arrives before this answer
        finally:
            await conn.remove_listener(channel, hear)
    assert heard == []
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_a_relay_goes_on_publishing_while_another_session_holds_a_row_it_has_to_delete(kit) -> None:  # type: ignore[no-untyped-def]
    # Another relay's claim that saw the row unclaimed when it started locks it and keeps the lock to its end; two
    # relays whose deletes waited for each other's claims deadlocked. The relay skips the row and deletes it later.
    pool, prefix, broker = kit
    publisher = await started(KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="skips"))
    relay = OutboxRelay(pool, publisher, poll_interval_s=60, delete_after_s=60)
    running = asyncio.create_task(relay.run())
    topic = Topic.PAYMENTS_EVENTS.qualified(prefix)
    other = await pool.acquire()
    try:
        await write(pool, prefix, ["ord_first"], relay.wake)
        await read_until(broker.bootstrap, topic, lambda r: len(r) >= 1)
        held = await pool.fetchval("SELECT id FROM outbox")  # acknowledged, deleted with the next claim
        async with other.transaction():
            assert await other.fetchval("SELECT id FROM outbox WHERE id = $1 FOR UPDATE", held) == held
            await write(pool, prefix, ["ord_second"], relay.wake)
            records = await read_until(broker.bootstrap, topic, lambda r: len(r) >= 2, timeout_s=20)
            assert sorted(r.key for r in records) == [b"ord_first", b"ord_second"]
            assert await pool.fetchval("SELECT count(*) FROM outbox WHERE id = $1", held) == 1
        await write(pool, prefix, ["ord_third"], relay.wake)
        await read_until(broker.bootstrap, topic, lambda r: len(r) >= 3)
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE id = $1", held) == 0, "deleted once let go"
    finally:
        await pool.release(other)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await publisher.stop()
