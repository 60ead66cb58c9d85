"""A support resend of an order whose notification the retention is deleting at that moment, on the real broker and
PostgreSQL: the retention's batch is held open in a transaction while the resend runs, then committed."""

import asyncio

import asyncpg
import pytest

from contracts.events import OrderStatus
from notifier.adapters.retention import notification_retention, pruned
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import RunningNotifier, change, publish
from tests.notifier.push_service import PushService

KEEP_S = 90 * 86400.0


async def told_long_ago(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> RunningNotifier:
    """A notifier whose user u1's phone was told ord_1 was credited, 100 days ago: past the keep time, settled."""
    running = await notifier()
    await running.api.put(f"{running.url}/v1/users/u1/subscriptions", json=push_service.subscribe("phone"))
    await publish(broker, f"{isolation}.", change("ord_1", OrderStatus.CREDITED, 1))
    await eventually(lambda: len(push_service.messages("phone")) == 1)
    await eventually(running.settled)
    pool = running.notifier.infra.pool
    await pool.execute("UPDATE notifications SET created_at = now() - interval '100 days' WHERE order_id = 'ord_1'")
    return running


async def waiting_for_a_lock(pool: asyncpg.Pool, statement: str) -> bool:
    """Whether a statement containing `statement` waits for a lock another transaction holds."""
    return bool(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0", statement
        )
    )


async def test_a_resend_while_the_retention_deletes_the_order_s_notification_is_refused_404_not_a_server_error(
    notifier: StartNotifier, push_service: PushService, isolation: str, broker: Broker
) -> None:
    running = await told_long_ago(notifier, push_service, broker, isolation)
    pool = running.notifier.infra.pool
    _, notifications = pruned(KEEP_S)
    url = f"{running.url}/v1/orders/ord_1/notifications/resend"

    async with pool.acquire() as conn:
        batch = conn.transaction()
        await batch.start()
        assert await conn.execute(notifications.statement, KEEP_S, 5000) == "DELETE 1"
        asked = asyncio.create_task(running.api.post(url, json={"reason": "user asks again"}))
        await eventually(lambda: waiting_for_a_lock(pool, "INSERT INTO resends"))  # the resend waits for the batch
        await batch.commit()
        answer = await asked

    assert (answer.status_code, answer.json()["error"]) == (404, "unknown_order"), answer.text
    assert await pool.fetchval("SELECT count(*) FROM resends") == 0
    assert await pool.fetchval("SELECT count(*) FROM deliveries") == 0
    assert push_service.messages("phone")[1:] == []


async def test_a_resend_recorded_while_the_retention_deletes_its_notification_keeps_it_and_is_delivered(
    notifier: StartNotifier, push_service: PushService, isolation: str, broker: Broker
) -> None:
    running = await told_long_ago(notifier, push_service, broker, isolation)
    pool = running.notifier.infra.pool
    _, notifications = pruned(KEEP_S)

    async with running.notifier.uow() as tx:
        resend = await tx.resend_latest("ord_1", "user asks again", "support")
        assert resend is not None and resend["deliveries"] == 1
        batch = asyncio.create_task(pool.execute(notifications.statement, KEEP_S, 5000))
        await eventually(lambda: waiting_for_a_lock(pool, "DELETE FROM notifications"))  # the batch waits for it
    # The batch chose the notification before the resend was committed: it is refused, and tried again later.
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await batch

    await eventually(running.settled)
    assert [m["status"] for m in push_service.messages("phone")] == ["credited", "credited"]
    assert await pool.fetchval("SELECT count(*) FROM resends") == 1
    # The next batch sees the resend, kept (asked just now) with the notification it resent.
    assert await notification_retention(pool, KEEP_S).prune() == 0
    assert await pool.fetchval("SELECT count(*) FROM notifications") == 1
