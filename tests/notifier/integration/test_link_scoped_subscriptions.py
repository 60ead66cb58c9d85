"""A status link is shared further than its user (screenshots, forwarded chats): a device registered through one
order's link gets that order's notifications only, never the user's other orders; a device the platform registers
(users:write) gets them all, and keeps them; one registered through a link has the link's right for as long as the
link lasts, and gets nothing after it expires. The link in a push message lasts as long as the notifier's setting says.
Real PostgreSQL, the session's broker, the loopback push service."""

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from contracts.events import OrderStatus
from notifier.adapters.subscriptions import PostgresSubscriptions
from servicekit.links import StatusLinks
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import RunningNotifier, change, publish
from tests.notifier.push_service import Fault, PushService
from tests.service_settings import STATUS_LINK_SECRET

LINKS = StatusLinks([STATUS_LINK_SECRET])


async def with_link(
    running: RunningNotifier, order_id: str, user_id: str, device: dict[str, Any], *, ttl_s: int = 3600
) -> str:
    """Register the device as the status page does: with the order's status link (lasting `ttl_s`), no API key."""
    url = f"{running.url}/v1/orders/{order_id}/subscriptions"
    async with httpx.AsyncClient() as browser:
        answer = await browser.put(url, params={"token": LINKS.token(order_id, user_id, ttl_s=ttl_s)}, json=device)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["subscription_id"])


async def with_key(running: RunningNotifier, user_id: str, device: dict[str, Any]) -> str:
    answer = await running.api.put(f"{running.url}/v1/users/{user_id}/subscriptions", json=device)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["subscription_id"])


async def scopes(running: RunningNotifier, user_id: str) -> dict[str, str | None]:
    listed = (await running.api.get(f"{running.url}/v1/users/{user_id}/subscriptions")).json()["subscriptions"]
    return {s["subscription_id"]: s["order_id"] for s in listed}


def orders_on(push_service: PushService, device: str) -> list[str]:
    return [m["order_id"] for m in push_service.messages(device)]


async def test_a_device_registered_through_an_orders_link_gets_that_orders_statuses_and_not_the_users_other_orders(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    prefix = f"{isolation}."
    await with_link(running, "ord_a", "u1", push_service.subscribe("forwarded-link"))
    await with_key(running, "u1", push_service.subscribe("phone"))

    await publish(broker, prefix, change("ord_a", OrderStatus.CREDITED, 2))
    await eventually(lambda: orders_on(push_service, "forwarded-link") == ["ord_a"], timeout_s=60)
    await publish(broker, prefix, change("ord_b", OrderStatus.CREDITED, 2))
    await eventually(lambda: sorted(orders_on(push_service, "phone")) == ["ord_a", "ord_b"], timeout_s=60)
    await eventually(running.settled, timeout_s=60)
    assert orders_on(push_service, "forwarded-link") == ["ord_a"], "order B never reaches order A's link device"

    resent = await running.api.post(f"{running.url}/v1/orders/ord_b/notifications/resend", json={"reason": "lost"})
    assert (resent.status_code, resent.json()["resend"]["deliveries"]) == (202, 1), resent.text
    await eventually(lambda: len(push_service.messages("phone")) == 3, timeout_s=60)
    await eventually(running.settled, timeout_s=60)
    assert orders_on(push_service, "forwarded-link") == ["ord_a"], "nor does a resend of order B"


async def test_a_device_registered_again_through_another_orders_link_follows_that_order_only(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    device, platforms = push_service.subscribe("browser"), push_service.subscribe("platforms-browser")
    sid = await with_link(running, "ord_a", "u1", device)
    assert await with_link(running, "ord_b", "u1", device) == sid, "one device, one subscription"
    kept = await with_key(running, "u1", platforms)
    assert await with_link(running, "ord_a", "u1", platforms) == kept
    assert await scopes(running, "u1") == {sid: "ord_b", kept: None}, "a link never widens nor narrows the platform's"

    await publish(
        broker, f"{isolation}.", change("ord_a", OrderStatus.CREDITED, 2), change("ord_b", OrderStatus.CREDITED, 2)
    )
    await eventually(lambda: len(push_service.messages("platforms-browser")) == 2, timeout_s=60)
    await eventually(running.settled, timeout_s=60)
    assert orders_on(push_service, "browser") == ["ord_b"]

    assert await with_key(running, "u1", device) == sid
    assert (await scopes(running, "u1"))[sid] is None, "the platform registers a device for every order"


async def test_an_orders_link_removes_only_the_device_registered_through_it(
    notifier: StartNotifier, push_service: PushService
) -> None:
    running = await notifier()
    from_a = await with_link(running, "ord_a", "u1", push_service.subscribe("browser"))
    phone = await with_key(running, "u1", push_service.subscribe("phone"))

    async def remove(order_id: str, sid: str) -> httpx.Response:
        async with httpx.AsyncClient() as browser:
            url = f"{running.url}/v1/orders/{order_id}/subscriptions/{sid}"
            return await browser.delete(url, params={"token": LINKS.token(order_id, "u1")})

    for order_id, sid in (("ord_a", phone), ("ord_b", from_a), ("ord_b", phone)):
        refused = await remove(order_id, sid)
        assert (refused.status_code, refused.json()["error"]) == (404, "subscription_not_found"), (order_id, sid)
    assert await scopes(running, "u1") == {from_a: "ord_a", phone: None}, "a link never silences other devices"
    assert (await remove("ord_a", from_a)).status_code == 204
    assert await scopes(running, "u1") == {phone: None}


async def test_a_delivery_queued_for_an_order_the_device_no_longer_follows_is_dropped_and_the_device_kept(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    pool, device = running.notifier.infra.pool, push_service.subscribe("browser")
    sid = await with_link(running, "ord_a", "u1", device)
    push_service.script("browser", Fault(429, retry_after="3600"))  # A's first attempt is refused: it waits
    await publish(broker, f"{isolation}.", change("ord_a", OrderStatus.CREDITED, 2))

    async def waiting_for_its_retry() -> bool:
        row = await pool.fetchrow("SELECT state, last_error FROM deliveries WHERE order_id = 'ord_a'")
        return row is not None and row["state"] == "pending" and row["last_error"] is not None

    await eventually(waiting_for_its_retry, timeout_s=60)
    assert await with_link(running, "ord_b", "u1", device) == sid
    await pool.execute("UPDATE deliveries SET next_attempt_at = now() WHERE order_id = 'ord_a'")
    running.notifier.worker.wake()
    await eventually(running.settled, timeout_s=60)

    assert push_service.messages("browser") == [], "order A's retry never reaches a device that follows order B"
    assert await pool.fetchval("SELECT state FROM deliveries WHERE order_id = 'ord_a'") == "gone"
    assert await scopes(running, "u1") == {sid: "ord_b"}, "the device stays, following order B"


async def test_the_link_in_a_push_message_lasts_as_long_as_the_setting_says(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    running = await notifier(public_url="https://status.example", status_link_ttl_s=3600)
    await with_key(running, "u1", push_service.subscribe("phone"))
    await publish(broker, f"{isolation}.", change("ord_a", OrderStatus.CREDITED, 2))
    await eventually(lambda: push_service.messages("phone"), timeout_s=60)

    (message,) = push_service.messages("phone")
    token = parse_qs(urlsplit(message["url"]).query)["token"][0]
    assert LINKS.verify("ord_a", token).user_id == "u1"
    assert abs(int(token.split(".")[0]) - (time.time() + 3600)) < 120


def subscriptions_of(running: RunningNotifier) -> PostgresSubscriptions:
    return PostgresSubscriptions(running.notifier.infra.pool, running.settings.address_policy)


async def with_link_until(
    running: RunningNotifier, order_id: str, user_id: str, device: dict[str, Any], expires_at: datetime
) -> str:
    """Register the device as the status page does with a link expiring at `expires_at` (in the past, too: a link
    the notifier would refuse now, as one that opened the page before it expired)."""
    keys = device["keys"]
    return await subscriptions_of(running).register(
        user_id, "webpush", device["endpoint"], keys["p256dh"], keys["auth"], order_id=order_id, expires_at=expires_at
    )


async def expiries(running: RunningNotifier, user_id: str) -> dict[str, datetime | None]:
    return {s.subscription_id: s.expires_at for s in await subscriptions_of(running).of_user(user_id)}


async def test_a_device_registered_by_a_link_gets_nothing_for_its_order_after_the_link_expires(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    now = datetime.now(UTC)
    await with_key(running, "u1", push_service.subscribe("phone"))
    await with_link_until(running, "ord_a", "u1", push_service.subscribe("open-link"), now + timedelta(1))
    # Last: the user's next registration forgets an expired device.
    expired = await with_link_until(running, "ord_a", "u1", push_service.subscribe("expired-link"), now - timedelta(1))

    await publish(broker, f"{isolation}.", change("ord_a", OrderStatus.CREDITED, 2))
    await eventually(lambda: orders_on(push_service, "phone") == orders_on(push_service, "open-link") == ["ord_a"])
    await eventually(running.settled, timeout_s=60)
    assert push_service.messages("expired-link") == [], "the link's right ended when it expired"
    pool = running.notifier.infra.pool
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE subscription_id = $1", expired) == 0

    resent = await running.api.post(f"{running.url}/v1/orders/ord_a/notifications/resend", json={"reason": "lost"})
    assert (resent.status_code, resent.json()["resend"]["deliveries"]) == (202, 2), resent.text
    await eventually(lambda: len(push_service.messages("open-link")) == 2, timeout_s=60)
    await eventually(running.settled, timeout_s=60)
    assert push_service.messages("expired-link") == [], "nor does a resend"
    assert expired in await scopes(running, "u1"), "listed until the user's next registration; a fresh link renews it"


async def test_a_delivery_whose_link_expired_while_it_waited_for_its_retry_is_dropped_and_the_device_kept(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    pool = running.notifier.infra.pool
    sid = await with_link_until(
        running, "ord_a", "u1", push_service.subscribe("browser"), datetime.now(UTC) + timedelta(1)
    )
    push_service.script("browser", Fault(429, retry_after="3600"))  # the first attempt is refused: it waits
    await publish(broker, f"{isolation}.", change("ord_a", OrderStatus.CREDITED, 2))

    async def waiting_for_its_retry() -> bool:
        row = await pool.fetchrow("SELECT state, last_error FROM deliveries WHERE order_id = 'ord_a'")
        return row is not None and row["state"] == "pending" and row["last_error"] is not None

    await eventually(waiting_for_its_retry, timeout_s=60)
    await pool.execute(
        "UPDATE push_subscriptions SET expires_at = now() - interval '1 second' WHERE subscription_id = $1", sid
    )
    await pool.execute("UPDATE deliveries SET next_attempt_at = now() WHERE order_id = 'ord_a'")
    running.notifier.worker.wake()
    await eventually(running.settled, timeout_s=60)

    assert push_service.messages("browser") == [], "the retry comes after the link's right ended"
    assert await pool.fetchval("SELECT state FROM deliveries WHERE order_id = 'ord_a'") == "gone"
    assert await scopes(running, "u1") == {sid: "ord_a"}, "the device is kept"


async def test_a_fresh_link_extends_a_devices_right_an_older_one_never_shortens_it_and_the_platform_ends_its_end(
    notifier: StartNotifier, push_service: PushService
) -> None:
    running = await notifier()
    device, platforms = push_service.subscribe("browser"), push_service.subscribe("platforms-browser")
    soon, later = datetime.now(UTC) + timedelta(hours=1), datetime.now(UTC) + timedelta(days=30)
    sid = await with_link_until(running, "ord_a", "u1", device, soon)
    assert await with_link_until(running, "ord_a", "u1", device, later) == sid
    assert (await expiries(running, "u1"))[sid] == later, "a fresh link of the same order extends it"
    await with_link_until(running, "ord_a", "u1", device, soon)
    assert (await expiries(running, "u1"))[sid] == later, "an older link still open never shortens it"
    await with_link_until(running, "ord_b", "u1", device, soon)
    assert (await expiries(running, "u1"))[sid] == soon, "another order's link gives that link's right only"
    await with_link_until(running, "ord_b", "u2", device, later)
    assert (await expiries(running, "u2"))[sid] == later, "a device that changed hands takes its new link's"
    assert await with_key(running, "u2", device) == sid
    assert (await expiries(running, "u2"))[sid] is None, "the platform registers a device for every order, no end"
    assert await with_link_until(running, "ord_a", "u2", device, soon) == sid
    assert (await expiries(running, "u2"))[sid] is None, "and a link never puts an end to the platform's"

    kept = await with_key(running, "u1", platforms)
    await with_link_until(running, "ord_a", "u1", platforms, datetime.now(UTC) - timedelta(1))
    assert await scopes(running, "u1") == {kept: None} and (await expiries(running, "u1"))[kept] is None


async def test_a_device_registered_through_the_status_page_keeps_its_links_expiry_and_gets_nothing_after_it(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    sid = await with_link(running, "ord_a", "u1", push_service.subscribe("browser"), ttl_s=2)
    await with_key(running, "u1", push_service.subscribe("phone"))
    (until,) = (e for s, e in (await expiries(running, "u1")).items() if s == sid)
    assert until is not None and abs(until.timestamp() - (time.time() + 2)) < 2, "the link's own expiry"
    listed = (await running.api.get(f"{running.url}/v1/users/u1/subscriptions")).json()["subscriptions"]
    assert {s["subscription_id"]: s["expires_at"] for s in listed}[sid] == until.isoformat()

    await eventually(lambda: datetime.now(UTC) > until, timeout_s=10)
    await publish(broker, f"{isolation}.", change("ord_a", OrderStatus.CREDITED, 2))
    await eventually(lambda: orders_on(push_service, "phone") == ["ord_a"], timeout_s=60)
    await eventually(running.settled, timeout_s=60)
    assert push_service.messages("browser") == [], "its link expired before the status"


async def test_devices_whose_status_link_expired_leave_their_slots_to_the_users_next_device(
    notifier: StartNotifier, push_service: PushService
) -> None:
    running = await notifier(max_subscriptions_per_user=2)
    await with_link(running, "ord_a", "u1", push_service.subscribe("old-browser"), ttl_s=3)
    await with_link(running, "ord_b", "u1", push_service.subscribe("other-old-browser"), ttl_s=3)
    until = max(e for e in (await expiries(running, "u1")).values() if e is not None)
    await eventually(lambda: datetime.now(UTC) > until, timeout_s=10)
    # Both devices get nothing now, so no push service ever answers 410 for them (what removes a dead endpoint).
    # Links' devices never take the platform's slots, but they fill the slots of all the user's links together.
    sid = await with_link(running, "ord_c", "u1", push_service.subscribe("new-browser"))
    assert list(await expiries(running, "u1")) == [sid], "the expired devices are forgotten"


async def test_devices_registered_through_a_forwarded_link_never_keep_the_platform_from_registering_the_users_phone(
    notifier: StartNotifier, push_service: PushService
) -> None:
    running = await notifier()  # the default bounds
    token = LINKS.token("ord_a", "u1", ttl_s=30 * 24 * 3600)
    url = f"{running.url}/v1/orders/ord_a/subscriptions"
    async with httpx.AsyncClient() as stranger:  # whoever the link was forwarded to, with made-up endpoints
        answers = [
            await stranger.put(url, params={"token": token}, json=push_service.subscribe(f"made-up-{i}"))
            for i in range(25)
        ]

    phone = await running.api.put(f"{running.url}/v1/users/u1/subscriptions", json=push_service.subscribe("phone"))
    assert phone.status_code == 200, f"the user's new phone is refused: {phone.text}"
    assert [a.status_code for a in answers] == [200] * 5 + [409] * 20, "a link registers a few devices for its order"
    assert {a.json()["error"] for a in answers[5:]} == {"too_many_subscriptions"}
    async with httpx.AsyncClient() as browser:  # the user's own browser, on another order's page
        own = await browser.put(
            f"{running.url}/v1/orders/ord_b/subscriptions",
            params={"token": LINKS.token("ord_b", "u1")},
            json=push_service.subscribe("own-browser"),
        )
    assert own.status_code == 200, f"another order's link is refused: {own.text}"
    assert len(await scopes(running, "u1")) == 7


async def test_the_devices_of_all_a_users_status_links_together_are_bounded_apart_from_the_platforms(
    notifier: StartNotifier, push_service: PushService
) -> None:
    running = await notifier(max_subscriptions_per_user=3, max_link_subscriptions_per_order=2)
    for order_id, device in (("ord_a", "a1"), ("ord_a", "a2"), ("ord_b", "b1")):
        await with_link(running, order_id, "u1", push_service.subscribe(device))
    async with httpx.AsyncClient() as browser:
        url = f"{running.url}/v1/orders/ord_c/subscriptions"
        past = await browser.put(url, params={"token": LINKS.token("ord_c", "u1")}, json=push_service.subscribe("c1"))
    assert (past.status_code, past.json()["error"]) == (409, "too_many_subscriptions"), "a user's links together"
    assert "status links" in past.json()["detail"]
    for i in range(3):
        await with_key(running, "u1", push_service.subscribe(f"phone-{i}"))
    assert len(await scopes(running, "u1")) == 6, "the platform's own slots, whatever the links registered"
