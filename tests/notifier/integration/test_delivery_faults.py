"""Faults at the push service and in the notifier: every status change reaches the device once, or is in
the dead-letter topic with the reason; a repeat is only ever the same message under the same Topic, which
the push service and the device collapse into one."""

from collections import Counter

import pytest

from contracts.events import OrderStatus
from notifier import domain
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import RunningNotifier, change, dead_letters, header, publish
from tests.notifier.push_service import Fault, PushService


async def subscribe(running: RunningNotifier, push_service: PushService, user_id: str, device: str) -> str:
    response = await running.api.put(
        f"{running.url}/v1/users/{user_id}/subscriptions", json=push_service.subscribe(device)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["subscription_id"])


async def deliveries(running: RunningNotifier, order_id: str) -> list[dict[str, object]]:
    body = (await running.api.get(f"{running.url}/v1/orders/{order_id}/notifications")).json()
    return [d for n in body["notifications"] for d in n["deliveries"]]


async def settle(running: RunningNotifier, push_service: PushService, pushes: int) -> None:
    await eventually(lambda: len(push_service.received) >= pushes, timeout_s=60)
    await eventually(running.settled, timeout_s=60)


async def test_a_push_service_answering_500_then_503_gets_the_message_on_the_third_attempt(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    await subscribe(running, push_service, "u1", "phone")
    push_service.script("phone", Fault(500), Fault(503))
    await publish(broker, f"{isolation}.", change("ord_1", OrderStatus.CREDITED, 2))
    await settle(running, push_service, 1)
    assert [m["status"] for m in push_service.messages("phone")] == ["credited"]
    assert len(push_service.attempts["phone"]) == 3
    (delivery,) = await deliveries(running, "ord_1")
    assert (delivery["state"], delivery["attempts"]) == ("delivered", 3)
    assert await dead_letters(broker, f"{isolation}.") == []


async def test_a_429_is_retried_no_sooner_than_its_retry_after(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    await subscribe(running, push_service, "u1", "phone")
    push_service.script("phone", Fault(429, retry_after="1"))
    await publish(broker, f"{isolation}.", change("ord_1", OrderStatus.CREDITED, 2))
    await settle(running, push_service, 1)
    first, second = push_service.attempts["phone"]
    assert second - first >= 0.95  # backoff alone would have retried within 0.1 s
    assert [m["status"] for m in push_service.messages("phone")] == ["credited"]


async def test_a_410_removes_the_subscription_and_dead_letters_that_delivery_with_the_reason(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    old = await subscribe(running, push_service, "u1", "old-phone")
    await subscribe(running, push_service, "u1", "new-phone")
    push_service.gone.add("old-phone")
    prefix = f"{isolation}."
    await publish(broker, prefix, change("ord_1", OrderStatus.DELAYED, 2))
    await settle(running, push_service, 1)

    (record,) = await dead_letters(broker, prefix)
    assert record.key == b"ord_1"
    assert header(record, "dlq_target") == old
    assert "push service answered 410" in header(record, "dlq_reason")
    listed = (await running.api.get(f"{running.url}/v1/users/u1/subscriptions")).json()["subscriptions"]
    assert [s["subscription_id"] for s in listed] != [old] and len(listed) == 1

    await publish(broker, prefix, change("ord_1", OrderStatus.CREDITED, 3))
    await settle(running, push_service, 2)
    assert [m["status"] for m in push_service.messages("new-phone")] == ["delayed", "credited"]
    assert len(push_service.attempts["old-phone"]) == 1
    assert len(await dead_letters(broker, prefix)) == 1


async def test_a_slow_push_service_times_out_and_the_retry_is_collapsed_into_one_message_on_the_device(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    running = await notifier(push_timeout_s=0.3)
    await subscribe(running, push_service, "u1", "phone")
    push_service.script("phone", Fault(delay_s=1.5))  # accepted, but the answer comes after the timeout
    await publish(broker, f"{isolation}.", change("ord_1", OrderStatus.CREDITED, 2))
    await settle(running, push_service, 2)
    copies = push_service.messages("phone")
    assert {m["notification_id"] for m in copies} == {domain.notification_id("ord_1", OrderStatus.CREDITED)}
    assert len({p.topic for p in push_service.received}) == 1
    assert len(push_service.device_view("phone")) == 1
    (delivery,) = await deliveries(running, "ord_1")
    assert delivery["state"] == "delivered"
    assert "timed out" in str(delivery["last_error"]) or delivery["attempts"] == 2


async def test_after_the_last_attempt_the_notification_is_dead_lettered_with_the_reason(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    running = await notifier(max_attempts=3)
    sid = await subscribe(running, push_service, "u1", "phone")
    push_service.script("phone", *[Fault(500)] * 3)
    prefix = f"{isolation}."
    await publish(broker, prefix, change("ord_1", OrderStatus.REFUNDED, 2))
    await eventually(lambda: len(push_service.attempts.get("phone", [])) >= 3)
    await eventually(running.settled)
    (record,) = await dead_letters(broker, prefix)
    assert header(record, "dlq_reason") == "undeliverable after 3 attempts: webpush: push service answered 500"
    assert (header(record, "dlq_channel"), header(record, "dlq_target")) == ("webpush", sid)
    notification = (await running.api.get(f"{running.url}/v1/orders/ord_1/notifications")).json()["notifications"]
    assert notification[0]["delivery"] == "failed"
    assert push_service.received == []


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_a_notifier_killed_mid_delivery_delivers_everything_after_a_restart_and_repeats_only_collapse(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    orders = [f"ord_{i}" for i in range(12)]
    # A timeout long enough that a loaded machine causes no retry of its own: repeats come from the kill only.
    first = await notifier(push_timeout_s=2.0)
    await subscribe(first, push_service, "u1", "phone")
    push_service.script("phone", *[Fault(hold=True)] * 4)
    changes = [change(o, s, q) for o in orders for s, q in ((OrderStatus.DELAYED, 2), (OrderStatus.CREDITED, 3))]
    await publish(broker, f"{isolation}.", *changes)
    await eventually(lambda: push_service.held >= 4, timeout_s=60)

    await first.kill()  # the push service has the held messages; the notifier never heard back about them
    before_kill = {m["notification_id"] for m in push_service.messages("phone")}
    push_service.release.set()
    second = await notifier(push_timeout_s=2.0)
    await eventually(lambda: len({m["notification_id"] for m in push_service.messages("phone")}) >= 24, timeout_s=180)
    await eventually(second.settled, timeout_s=120)

    arrived = push_service.messages("phone")
    received = Counter(m["notification_id"] for m in arrived)
    assert set(received) == {domain.notification_id(c.order_id, c.status) for c in changes}
    repeated = {nid for nid, n in received.items() if n > 1}
    assert repeated <= before_kill, "only what the push service had before the kill may come again"
    assert len(repeated) >= 4, "the held messages were never acknowledged, so they came again"
    view = push_service.device_view("phone")
    assert {m["order_id"]: m["status"] for m in view.values()} == dict.fromkeys(orders, "credited")
    for order in orders:  # per order and device, statuses arrive in order, repeats included
        statuses = [m["status"] for m in arrived if m["order_id"] == order]
        assert statuses == sorted(statuses, key=["delayed", "credited"].index), statuses
    assert await dead_letters(broker, f"{isolation}.") == []
