"""An order payments closed unpaid at its payment expiry (OrderExpired on payments.events) reaches its user once."""

from datetime import UTC, datetime, timedelta

from contracts.codec import encode, envelope_for
from contracts.events import OrderExpired
from contracts.topics import Topic
from credited.stack.processes import free_port
from harness.simulator.receiver import WebhookReceiver
from servicekit.kafka import KafkaPublisher
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.conftest import StartNotifier

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def expired(order_id: str) -> OrderExpired:
    return OrderExpired(
        order_id=order_id,
        user_id="u-tw",
        amount=30000,
        currency="TWD",
        channel="alipay",
        provider="alipay",
        placed_at=T0,
        expired_at=T0 + timedelta(minutes=30),
    )


async def publish_payment_facts(broker: Broker, prefix: str, *records: tuple[OrderExpired, str]) -> None:
    """Publish OrderExpired as payments does, each with the given event id (a repeated id repeats one fact)."""
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test", topic_prefix=prefix)
    await publisher.start()
    try:
        topic = Topic.PAYMENTS_EVENTS.qualified(prefix)
        await publisher.publish_many(
            [(topic, encode(m, envelope_for(m, producer="payments", event_id=event_id))) for m, event_id in records]
        )
    finally:
        await publisher.stop()


async def test_an_expired_order_is_told_to_its_user_once_in_their_language_however_often_it_arrives(
    notifier: StartNotifier, broker: Broker, isolation: str
) -> None:
    webhook = WebhookReceiver(free_port(), "hook-secret")
    await webhook.start()
    try:
        running = await notifier(webhook_url=webhook.url, webhook_secret="hook-secret")
        chosen = {"locale": "zh-TW", "time_zone": "Asia/Taipei"}
        assert (await running.api.put(f"{running.url}/v1/users/u-tw/locale", json=chosen)).is_success
        message = expired("ord_exp")
        # payments' outbox may publish it again (same event id); a second expiry of the order is the same news
        await publish_payment_facts(
            broker, f"{isolation}.", (message, "evt-1"), (message, "evt-1"), (message, "evt-2"), (expired("ord_b"), "e")
        )
        await eventually(lambda: len(webhook.received.payloads) >= 2)
        await eventually(running.settled)
        assert webhook.received.duplicates == 0
        told = {p["order_id"]: p for p in webhook.received.payloads.values()}
        assert sorted(told) == ["ord_b", "ord_exp"]
        assert (told["ord_exp"]["status"], told["ord_exp"]["title"]) == ("expired", "儲值訂單已逾期")
        assert "$300.00" in told["ord_exp"]["body"] and told["ord_exp"]["paid_at"] is None
        listed = (await running.api.get(f"{running.url}/v1/orders/ord_exp/notifications")).json()["notifications"]
        assert [(n["status"], n["delivery"]) for n in listed] == [("expired", "delivered")]
        page = await running.api.get(f"{running.url}/v1/orders/ord_exp/timeline")
        assert page.status_code == 200, page.text
    finally:
        await webhook.stop()
