"""The outbox relay gives its claims back on its way out; when the database went away under it (a failover), it says
so in one line and closes the session, with no traceback, and nothing escapes to be logged again. Real PostgreSQL:
the relay's connection's backend is ended from another session, as a failover ends every session."""

import logging

import asyncpg
import pytest

from servicekit.kafka import KafkaPublisher
from servicekit.outbox import OutboxRelay
from servicekit.postgres import create_pool, migrate
from tests.conftest import Broker


async def test_claims_given_back_to_a_database_that_went_away_are_said_in_one_line_and_the_session_closed(
    broker: Broker, database_url: str, isolation: str, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await create_pool(database_url, isolation, min_size=1, max_size=2)
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="give-back")
    relay = OutboxRelay(pool, publisher, poll_interval_s=60)
    try:
        await migrate(pool)
        async with pool.acquire() as conn:
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            ended = await asyncpg.connect(database_url)
            try:
                await ended.execute("SELECT pg_terminate_backend($1)", backend)
            finally:
                await ended.close()
            # asyncpg hands a connection it lost back to the pool at once: terminate() on it would raise again.
            with caplog.at_level(logging.WARNING, logger="servicekit.outbox"):
                await relay._give_back(conn, [1, 2])
    finally:
        await pool.close()
    (line,) = [r for r in caplog.records if r.name == "servicekit.outbox"]
    assert line.getMessage().startswith("outbox relay could not give its claims back (")
    assert not line.exc_info, "a traceback for a database that went away"
