"""A push endpoint that changes hands (a shared browser or phone, registered by another user) takes its new owner's
notifications only: what was still queued for the previous owner is settled as if the device had unsubscribed,
never sent to it. Real PostgreSQL, the session's broker, the loopback push service."""

from typing import Any

from contracts.events import OrderStatus
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import RunningNotifier, change, dead_letters, header, publish
from tests.notifier.push_service import Fault, PushService

DEVICE = "shared-browser"


async def register(running: RunningNotifier, user_id: str, device: dict[str, Any]) -> str:
    response = await running.api.put(f"{running.url}/v1/users/{user_id}/subscriptions", json=device)
    assert response.status_code == 200, response.text
    return str(response.json()["subscription_id"])


async def subscriptions_of(running: RunningNotifier, user_id: str) -> list[str]:
    listed = (await running.api.get(f"{running.url}/v1/users/{user_id}/subscriptions")).json()["subscriptions"]
    return [s["subscription_id"] for s in listed]


async def test_a_delivery_waiting_for_its_retry_never_reaches_the_device_once_another_user_registered_it(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    pool, prefix = running.notifier.infra.pool, f"{isolation}."
    browser = push_service.subscribe(DEVICE)
    sid = await register(running, "u-a", browser)
    push_service.script(DEVICE, Fault(429, retry_after="3600"))  # A's first attempt is refused: it waits to be retried
    await publish(broker, prefix, change("ord_a", OrderStatus.CREDITED, 2, user_id="u-a"))

    async def waiting_for_its_retry() -> bool:
        row = await pool.fetchrow("SELECT state, last_error FROM deliveries WHERE order_id = 'ord_a'")
        return row is not None and row["state"] == "pending" and row["last_error"] is not None

    await eventually(waiting_for_its_retry, timeout_s=60)

    assert await register(running, "u-b", browser) == sid, "the same endpoint is one subscription, now B's"
    await pool.execute("UPDATE deliveries SET next_attempt_at = now() WHERE order_id = 'ord_a'")  # the retry is due
    running.notifier.worker.wake()
    await eventually(running.settled, timeout_s=60)

    assert push_service.messages(DEVICE) == [], "A's notification never reaches the device B registered"
    assert len(push_service.attempts[DEVICE]) == 1, "only the first attempt, made while the device was A's"
    state = await pool.fetchval("SELECT state FROM deliveries WHERE order_id = 'ord_a'")
    assert state == "gone", "settled as a delivery to a device that unsubscribed"
    (record,) = await dead_letters(broker, prefix)
    assert (record.key, header(record, "dlq_target")) == (b"ord_a", sid)
    assert "another user" in header(record, "dlq_reason")
    assert (await subscriptions_of(running, "u-a"), await subscriptions_of(running, "u-b")) == ([], [sid]), (
        "settling A's delivery leaves B's subscription in place"
    )

    await publish(broker, prefix, change("ord_b", OrderStatus.CREDITED, 2, user_id="u-b"))
    await eventually(lambda: push_service.messages(DEVICE), timeout_s=60)
    assert [m["order_id"] for m in push_service.messages(DEVICE)] == ["ord_b"]
