"""Status changes reach the user's browser as real Web Push: encrypted for the subscription, signed with
VAPID, in the user's language, once per change, with the order's collapse key as Topic."""

from datetime import timedelta

from prometheus_client import generate_latest

from contracts.events import OrderStatus
from notifier import domain
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import T0, change, publish
from tests.notifier.push_service import PushService


async def test_a_status_change_is_decrypted_on_the_device_as_the_expected_message_in_the_users_language(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    api, url = running.api, running.url
    subscribed = await api.put(f"{url}/v1/users/u-zh/subscriptions", json=push_service.subscribe("phone"))
    assert subscribed.status_code == 200, subscribed.text
    assert (await api.put(f"{url}/v1/users/u-zh/locale", json={"locale": "zh-CN"})).json()["effective"] == "zh-CN"
    assert (await api.put(f"{url}/v1/users/u-en/subscriptions", json=push_service.subscribe("laptop"))).is_success

    credited_zh = change("ord_zh", OrderStatus.CREDITED, 2, user_id="u-zh")
    credited_en = change("ord_en", OrderStatus.CREDITED, 2, user_id="u-en")
    await publish(broker, f"{isolation}.", credited_zh, credited_en)
    await eventually(lambda: len(push_service.received) >= 2, timeout_s=60)

    (zh,) = push_service.messages("phone")
    expected = domain.render(credited_zh, "zh-CN")
    assert (zh["title"], zh["body"]) == ("充值已到账", "¥648.00 已充值到您的钱包。 订单号：ord_zh")  # noqa: RUF001
    assert (zh["title"], zh["body"], zh["tag"]) == (expected.title, expected.body, "ord_zh")
    (en,) = push_service.messages("laptop")
    assert (en["title"], en["body"]) == ("Top-up credited", "CN¥648.00 has been added to your wallet. Order: ord_en")
    push = next(p for p in push_service.received if p.device == "phone")
    assert (push.topic, push.urgency, push.ttl) == (domain.push_topic("ord_zh"), "high", 86400)


async def test_a_redelivered_status_change_reaches_the_device_once(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    await running.api.put(f"{running.url}/v1/users/u1/subscriptions", json=push_service.subscribe("phone"))
    delayed = change("ord_1", OrderStatus.DELAYED, 2, eta=T0 + timedelta(minutes=5))
    await publish(broker, f"{isolation}.", delayed, event_id="evt-delayed")
    await publish(broker, f"{isolation}.", delayed, event_id="evt-delayed")
    await publish(broker, f"{isolation}.", delayed)  # the same fact under a new event id
    await running.wait_until_consumed("ord_1", 1)
    await eventually(running.settled)
    await eventually(lambda: len(push_service.received) >= 1)
    assert [m["status"] for m in push_service.messages("phone")] == ["delayed"]
    assert "Expected by Nov 22, 2026, 8:05\u202fAM UTC." in push_service.messages("phone")[0]["body"]
    metrics = generate_latest(running.notifier.infra.registry).decode()  # what its metrics port serves
    assert 'notifier_deliveries_total{channel="webpush",outcome="delivered"} 1.0' in metrics
    assert 'notifier_delivery_latency_seconds_count{channel="webpush"} 1.0' in metrics


async def test_a_newer_status_replaces_the_older_one_on_the_device_through_the_collapse_key(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    await running.api.put(f"{running.url}/v1/users/u1/subscriptions", json=push_service.subscribe("phone"))
    prefix = f"{isolation}."
    await publish(broker, prefix, change("ord_1", OrderStatus.DELAYED, 2), change("ord_1", OrderStatus.CREDITED, 3))
    await publish(broker, prefix, change("ord_2", OrderStatus.CREDITED, 2))
    await eventually(lambda: len(push_service.received) >= 3)
    assert [m["status"] for m in push_service.messages("phone") if m["order_id"] == "ord_1"] == ["delayed", "credited"]
    view = push_service.device_view("phone")
    assert {m["order_id"]: m["status"] for m in view.values()} == {"ord_1": "credited", "ord_2": "credited"}


async def test_every_device_of_the_user_and_the_platform_webhook_get_the_notification_once(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    from credited.stack.processes import free_port
    from harness.simulator.receiver import WebhookReceiver

    webhook = WebhookReceiver(free_port(), "hook-secret")
    await webhook.start()
    try:
        running = await notifier(webhook_url=webhook.url, webhook_secret="hook-secret")
        for device in ("phone", "laptop"):
            await running.api.put(f"{running.url}/v1/users/u1/subscriptions", json=push_service.subscribe(device))
        await publish(broker, f"{isolation}.", change("ord_1", OrderStatus.CREDITED, 2))
        await eventually(lambda: len(push_service.received) >= 2 and len(webhook.received.payloads) >= 1)
        await eventually(running.settled)
        assert sorted(p.device for p in push_service.received) == ["laptop", "phone"]
        assert webhook.received.duplicates == 0
        (payload,) = webhook.received.payloads.values()
        assert (payload["order_id"], payload["status"], payload["sequence"]) == ("ord_1", "credited", 2)
        notifications = (await running.api.get(f"{running.url}/v1/orders/ord_1/notifications")).json()
        (only,) = notifications["notifications"]
        assert only["delivery"] == "delivered"
        assert sorted(d["channel"] for d in only["deliveries"]) == ["webhook", "webpush", "webpush"]
    finally:
        await webhook.stop()
