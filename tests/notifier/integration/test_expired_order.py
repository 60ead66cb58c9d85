"""An order payments closed unpaid at its payment expiry (OrderExpired on payments.events) reaches its user once,
and its status page, opened with the order's status link, says so: on opening it and live on a page already open."""

# ruff: noqa: RUF001 - Chinese text uses full-width punctuation on purpose

import asyncio
import contextlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson

from contracts.codec import encode, envelope_for
from contracts.events import OrderExpired, OrderStatus
from contracts.topics import Topic
from credited.stack.processes import free_port
from harness.simulator.receiver import WebhookReceiver
from servicekit.kafka import KafkaPublisher
from servicekit.links import StatusLinks
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import change, publish, timelines
from tests.notifier.push_service import Fault, PushService
from tests.service_settings import STATUS_LINK_SECRET

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


def initial_timeline(page: str) -> dict[str, Any]:
    """The timeline the status page's HTML renders before its live stream opens."""
    found = re.search(r'<script type="application/json" id="initial">(.*?)</script>', page)
    assert found, page
    parsed: dict[str, Any] = orjson.loads(found.group(1))
    return parsed


async def test_an_expired_orders_page_says_it_ended_unpaid_and_its_open_live_stream_is_told_in_the_users_language(
    notifier: StartNotifier, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    chosen = {"locale": "zh-TW", "time_zone": "Asia/Taipei"}
    assert (await running.api.put(f"{running.url}/v1/users/u-tw/locale", json=chosen)).is_success
    link = StatusLinks([STATUS_LINK_SECRET]).url(running.url, "ord_exp", "u-tw")  # the link payments gave the user
    token = parse_qs(urlsplit(link).query)["token"][0]
    events = f"{running.url}/v1/orders/ord_exp/events?token={token}&lang=zh-TW"  # as the open page asks for it
    async with httpx.AsyncClient(timeout=30) as browser, asyncio.timeout(60):
        async with browser.stream("GET", events) as answer, contextlib.aclosing(timelines(answer)) as stream:
            assert answer.status_code == 200
            waiting = await anext(stream)  # opened before the expiry: the order is still waiting
            assert (waiting["headline"], waiting["final"]) == ("正在等候這筆訂單的最新進度", False)
            await publish_payment_facts(broker, f"{isolation}.", (expired("ord_exp"), "evt-1"))
            told = await anext(stream)
        assert (told["headline"], told["final"], told["amount"]) == ("儲值訂單已逾期", True, "$300.00")
        assert [(s["key"], s["state"]) for s in told["steps"]] == [("submitted", "done"), ("expired", "done")]
        assert "不會扣任何款項" in told["message"] and told["message"].endswith("如需儲值，請重新下單。")
        assert told["steps"][-1]["at"] == (T0 + timedelta(minutes=30)).isoformat()

        page = await browser.get(link)
        assert page.status_code == 200, page.text
        assert initial_timeline(page.text) == told
        english = initial_timeline((await browser.get(f"{link}&lang=en")).text)
        assert english["headline"] == "Top-up order expired"
        assert "nothing was charged" in english["message"] and "place a new order" in english["message"]
        someone_else = StatusLinks([STATUS_LINK_SECRET]).url(running.url, "ord_exp", "u-someone-else")
        assert (await browser.get(someone_else)).status_code == 404


async def test_an_expiry_that_arrives_after_its_orders_late_payment_was_credited_is_never_pushed(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    # The provider had no trade when payments closed the order; the user paid it after all, the payment was applied
    # and credited (the reconciler's first status of it: sequence 1). payments.events and orders.status are separate
    # topics, consumed apart: the expiry, published first, can reach the notifier after the credit.
    running = await notifier()
    prefix = f"{isolation}."
    await running.api.put(f"{running.url}/v1/users/u1/subscriptions", json=push_service.subscribe("phone"))
    await publish(broker, prefix, change("ord_late", OrderStatus.CREDITED, 1))
    await eventually(lambda: len(push_service.messages("phone")) >= 1)

    await publish_payment_facts(broker, prefix, (expired("ord_late").model_copy(update={"user_id": "u1"}), "evt-exp"))
    await running.wait_until_consumed("ord_late", 2)
    await eventually(running.settled)

    assert [m["status"] for m in push_service.messages("phone")] == ["credited"]
    assert [m["status"] for m in push_service.device_view("phone").values()] == ["credited"]
    listed = (await running.api.get(f"{running.url}/v1/orders/ord_late/notifications")).json()["notifications"]
    assert {n["status"]: n["delivery"] for n in listed} == {"credited": "delivered", "expired": "superseded"}
    timeline = (await running.api.get(f"{running.url}/v1/orders/ord_late/timeline")).json()
    assert (timeline["headline"], timeline["final"]) == ("Top-up credited", True)

    url = f"{running.url}/v1/orders/ord_late/notifications/resend"
    resend = (await running.api.post(url, json={"reason": "user saw nothing"})).json()["resend"]
    assert resend["status"] == "credited"  # the latest the user was told, not the expiry that came after it
    await eventually(lambda: len(push_service.messages("phone")) >= 2)
    await eventually(running.settled)
    assert [m["status"] for m in push_service.messages("phone")] == ["credited", "credited"]


async def test_a_late_payments_credit_that_finds_its_orders_expiry_still_being_retried_is_the_last_thing_pushed(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    # The expiry's push was refused for a while (429, Retry-After); the user paid the order after all within
    # PAYMENTS_QUERY_UNKNOWN_ORDER_FOR_S, and the credit (the reconciler's first status of the order: sequence 1,
    # the expiry's number too) comes while the expiry still waits for its retry. The device must end at 'credited'.
    running = await notifier()
    prefix = f"{isolation}."
    await running.api.put(f"{running.url}/v1/users/u1/subscriptions", json=push_service.subscribe("phone"))
    push_service.script("phone", Fault(429, retry_after="3"))
    await publish_payment_facts(broker, prefix, (expired("ord_late").model_copy(update={"user_id": "u1"}), "evt-exp"))
    await eventually(lambda: len(push_service.attempts.get("phone", [])) >= 1)

    await publish(broker, prefix, change("ord_late", OrderStatus.CREDITED, 1))
    await running.wait_until_consumed("ord_late", 2)
    await eventually(lambda: len(push_service.messages("phone")) >= 2, timeout_s=30)
    await eventually(running.settled)

    assert [m["status"] for m in push_service.messages("phone")] == ["expired", "credited"]
    assert [m["status"] for m in push_service.device_view("phone").values()] == ["credited"]
    timeline = (await running.api.get(f"{running.url}/v1/orders/ord_late/timeline")).json()
    assert (timeline["headline"], timeline["final"]) == ("Top-up credited", True)
    url = f"{running.url}/v1/orders/ord_late/notifications/resend"
    resend = (await running.api.post(url, json={"reason": "user saw nothing"})).json()["resend"]
    assert resend["status"] == "credited"
