"""Claims of queue tables are planned for the tables as they are now, and leave no setting on the pooled connection:
a generic plan cached while a queue was empty scans all of it per claim once it fills (docs/capacity.md, step 3)."""

import asyncio

from servicekit.kafka import KafkaPublisher
from servicekit.outbox import OutboxRelay
from servicekit.postgres import create_pool, fetch_planned_now, migrate
from tests.conftest import Broker

SETTING = "SELECT current_setting('plan_cache_mode') AS mode"


async def test_a_claim_is_planned_afresh_and_the_connection_goes_back_to_the_pool_as_it_was(
    database_url: str, isolation: str
) -> None:
    pool = await create_pool(database_url, isolation, min_size=1, max_size=1)  # one connection: the same one after
    try:
        (row,) = await fetch_planned_now(pool, SETTING)
        assert row["mode"] == "force_custom_plan"
        assert await pool.fetchval(SETTING) == "auto"
    finally:
        await pool.close()


async def test_the_outbox_relay_claims_with_fresh_plans_and_gives_its_connection_back_as_it_was(
    broker: Broker, database_url: str, isolation: str
) -> None:
    pool = await create_pool(database_url, isolation, min_size=1, max_size=1)
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="plans")
    await publisher.start()
    relay = OutboxRelay(pool, publisher, poll_interval_s=60)
    await migrate(pool)
    seen: list[str] = []

    async def claim(conn, acked, limit):  # type: ignore[no-untyped-def]
        seen.append(await conn.fetchval(SETTING))
        return await OutboxRelay._claim(relay, conn, acked, limit)

    relay._claim = claim  # type: ignore[method-assign]
    running = asyncio.create_task(relay.run())
    try:
        for _ in range(1500):  # its first claim comes at once; 30 s at most
            if seen:
                break
            await asyncio.sleep(0.02)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await publisher.stop()
    try:
        assert seen[0] == "force_custom_plan"
        assert await pool.fetchval(SETTING) == "auto"
    finally:
        await pool.close()
