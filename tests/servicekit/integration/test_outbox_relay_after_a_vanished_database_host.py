"""PostgreSQL connections to a database host that vanished without a reset: statements time out, the connection is
dropped, and the outbox relay goes on with a new one (servicekit.postgres, servicekit.outbox)."""

import asyncio
import socket

import pytest

from contracts.codec import encode, envelope_for
from contracts.topics import Topic
from servicekit.kafka import KafkaPublisher, ensure_topics
from servicekit.outbox import OutboxRelay, add_to_outbox
from servicekit.postgres import COMMAND_TIMEOUT_S, KEEPALIVE_IDLE_S, create_pool, lazy_pool, migrate
from servicekit.retrying import Readiness
from tests.conftest import Broker
from tests.servicekit.events import paid
from tests.servicekit.frozen_proxy import FreezingProxy
from tests.servicekit.refusals import until


async def test_every_pooled_connection_has_tcp_keepalives_and_a_command_timeout(
    database_url: str, isolation: str
) -> None:
    """A pooled connection to a host that vanished answered nothing for about 15 minutes (Linux's retransmissions):
    every connection now has TCP keepalives and a user timeout, and every statement a timeout."""
    for pool in (await create_pool(database_url, isolation), await lazy_pool(database_url, isolation)):
        try:
            async with pool.acquire() as conn:
                sock = conn._con._transport.get_extra_info("socket")
                assert sock.family in (socket.AF_INET, socket.AF_INET6), "the tests' PostgreSQL is reached over TCP"
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE_S
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) > 0
                assert conn._con._config.command_timeout == COMMAND_TIMEOUT_S
        finally:
            await pool.close()


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_the_relay_publishes_again_within_a_minute_when_the_database_host_vanished_without_a_reset(
    broker: Broker, database_url: str, isolation: str
) -> None:
    """When the database's host vanishes without resetting its connections (a failover that moves its address, a
    VM gone, a dropped route), a statement on such a connection gets no answer and no error: with no
    command_timeout and no TCP keepalive/user timeout on the pools, the relay waited in its claim until the kernel
    gave up on retransmissions (about 15 minutes on Linux) although new connections already reached the promoted
    database. Here the relay's connections are frozen (kept open, nothing flows) and the database stays reachable
    on new connections; the relay publishes again within a minute."""
    prefix = f"{isolation}."
    await ensure_topics(broker.bootstrap, [t.qualified(prefix) for t in Topic], 3)
    direct = await create_pool(database_url, isolation)
    await migrate(direct)
    proxy = FreezingProxy(database_url)
    await proxy.up()
    pool = await create_pool(proxy.dsn, isolation)
    topic = Topic.PAYMENTS_EVENTS.qualified(prefix)
    publisher = KafkaPublisher(broker.bootstrap, idempotence=True, client_id="vanished", topic_prefix=prefix)
    await publisher.start()
    readiness = Readiness()
    relay = asyncio.create_task(OutboxRelay(pool, publisher, poll_interval_s=0.2, readiness=readiness).run())

    async def write(order_id: str) -> None:
        async with direct.acquire() as conn:
            await add_to_outbox(conn, [(topic, encode(paid(order_id), envelope_for(paid(order_id), producer="t")))])

    try:
        await write("ord_before")
        await until(lambda: direct.fetchval("SELECT count(*) = 0 FROM outbox"), "the first row published", 30)
        assert proxy.freeze() >= 1
        await write("ord_after")
        await until(
            lambda: direct.fetchval("SELECT count(*) = 0 FROM outbox"),
            f"the relay to publish on a new connection (relay done: {relay.done()}, readiness {readiness.report()})",
            60,
        )
    finally:
        relay.cancel()
        await asyncio.wait([relay], timeout=5)
        await publisher.stop()
        pool.terminate()
        await proxy.close()
        await direct.close()
