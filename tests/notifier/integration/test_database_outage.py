"""A database that cannot take a delivery's outcome (a full disk: sqlstate 53100) sends nothing twice, with one
notifier instance or two (compose's `--scale notifier-worker=2`): the outcome waits in memory while the worker keeps
extending the delivery's lease, so no instance claims it again, and is written when the database is back. Real
PostgreSQL, the session's real broker, the notifiers in the test's event loop, a webhook receiver that counts what
reaches it.

As under the chaos run's full disk, small in-place updates (a claim) still pass while the settle's write does
not: a trigger refuses updates of the notifications table with the disk-full sqlstate until it is dropped."""

from collections.abc import AsyncIterator

import asyncpg
import pytest

from contracts.events import OrderStatus
from credited.stack.processes import free_port
from harness.simulator.receiver import WebhookReceiver
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import change, publish

ORDERS = 6


@pytest.fixture
async def admin(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(free_port(), "hook-secret")
    await receiver.start()
    yield receiver
    await receiver.stop()


async def fill_the_disk_for_outcomes(admin: asyncpg.Connection, schema: str) -> None:
    await admin.execute(
        f"""
        CREATE FUNCTION {schema}.no_space() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
        END $$;
        CREATE TRIGGER no_space BEFORE UPDATE ON {schema}.notifications
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.no_space();
        """
    )


async def leases_ran_out(admin: asyncpg.Connection, schema: str, lease_s: float, times: int) -> None:
    """Wait until `times` leases have passed since the notifications were queued: unextended, each delivery's lease
    would have run out and the delivery been claimed again that many times."""

    async def passed() -> bool:
        query = f"SELECT bool_and(now() > created_at + make_interval(secs => $1)) FROM {schema}.notifications"
        return bool(await admin.fetchval(query, times * lease_s))

    await eventually(passed, timeout_s=times * lease_s + 60)


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_an_outcome_the_database_cannot_take_is_written_later_and_nothing_reaches_the_webhook_twice(
    notifier: StartNotifier, webhook: WebhookReceiver, broker: Broker, admin: asyncpg.Connection, isolation: str
) -> None:
    running = await notifier(webhook_url=webhook.url, webhook_secret=webhook.secret)
    schema = running.settings.db_schema
    await fill_the_disk_for_outcomes(admin, schema)
    changes = [change(f"ord_{i}", OrderStatus.CREDITED, 2) for i in range(ORDERS)]
    await publish(broker, f"{isolation}.", *changes)
    await eventually(lambda: len(webhook.received.payloads) >= ORDERS, timeout_s=60)

    await leases_ran_out(admin, schema, running.settings.lease_s, 3)
    assert not await running.settled(), "the outcomes cannot have been written yet"
    attempts = [r["attempts"] for r in await admin.fetch(f"SELECT attempts FROM {schema}.deliveries")]
    assert attempts == [1] * ORDERS, "the worker kept each lease while its outcome waited: none was claimed again"

    await admin.execute(f"DROP TRIGGER no_space ON {schema}.notifications")  # space again
    await eventually(running.settled, timeout_s=60)
    assert webhook.received.deliveries == {str(p["notification_id"]): 1 for p in webhook.received.payloads.values()}, (
        "each notification reaches the webhook exactly once"
    )
    states = await admin.fetch(
        f"SELECT n.state, d.state AS delivery FROM {schema}.notifications n JOIN "
        f"{schema}.deliveries d USING (notification_id)"
    )
    assert [(r["state"], r["delivery"]) for r in states] == [("delivered", "delivered")] * ORDERS


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_two_notifiers_send_nothing_twice_while_the_database_cannot_take_outcomes(
    notifier: StartNotifier, webhook: WebhookReceiver, broker: Broker, admin: asyncpg.Connection, isolation: str
) -> None:
    """The instance that holds an outcome it cannot write keeps extending its delivery's lease (claims and those
    small updates still pass), so the other instance, which knows nothing of that outcome, never claims the delivery
    and sends it again, however long the database refuses the outcome."""
    first = await notifier(webhook_url=webhook.url, webhook_secret=webhook.secret)
    second = await notifier(webhook_url=webhook.url, webhook_secret=webhook.secret)
    schema = first.settings.db_schema
    await fill_the_disk_for_outcomes(admin, schema)
    changes = [change(f"ord_{i}", OrderStatus.CREDITED, 2) for i in range(ORDERS)]
    await publish(broker, f"{isolation}.", *changes)
    await eventually(lambda: len(webhook.received.payloads) >= ORDERS, timeout_s=60)

    await leases_ran_out(admin, schema, first.settings.lease_s, 3)
    await admin.execute(f"DROP TRIGGER no_space ON {schema}.notifications")  # space again
    await eventually(first.settled, timeout_s=60)
    assert webhook.received.deliveries == {str(p["notification_id"]): 1 for p in webhook.received.payloads.values()}, (
        "each notification reaches the webhook exactly once"
    )
    attempts = [r["attempts"] for r in await admin.fetch(f"SELECT attempts FROM {schema}.deliveries")]
    assert attempts == [1] * ORDERS, "no instance claimed a delivery whose outcome the other held"
    assert first.notifier.worker.delivered_total + second.notifier.worker.delivered_total == ORDERS
