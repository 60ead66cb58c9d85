"""End users see only their own orders (issue 15 item 3): an order placed at payments answers a signed
`status_url` that opens the notifier's status page and its event stream; the same link expired, tampered,
bare or used for another order gets 404, as does a link naming another user than the order's. A device
subscribed with a status link belongs to the user the link names."""

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from contracts.events import OrderStatus
from payments.bootstrap import build as build_payments
from payments.config import Settings as PaymentsSettings
from servicekit.identity import Scope
from servicekit.links import StatusLinks
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import RunningNotifier, change, publish
from tests.notifier.push_service import PushService
from tests.service_settings import STATUS_LINK_SECRET, settings_for


@dataclass
class Stack:
    payments: httpx.AsyncClient
    notifier: RunningNotifier
    browser: httpx.AsyncClient
    """A user's browser: no API key, only the links it is given."""

    async def place(self, user_id: str) -> dict[str, str]:
        body = {"user_id": user_id, "amount": 600, "currency": "CNY", "channel": "alipay"}
        answer = await self.payments.post("/v1/orders", json=body)
        assert answer.status_code == 201, answer.text
        placed: dict[str, str] = answer.json()
        return placed

    async def first_event(self, url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        """The event stream's status and, when it opens, its text up to the first timeline event."""
        async with asyncio.timeout(30), self.browser.stream("GET", url, headers=headers) as answer:
            if answer.status_code != 200:
                await answer.aread()
                return answer.status_code, answer.text
            seen = ""
            async for chunk in answer.aiter_text():
                seen += chunk
                if "event: timeline" in seen:
                    return 200, seen
        return answer.status_code, seen


def token_of(status_url: str) -> str:
    return parse_qs(urlsplit(status_url).query)["token"][0]


def tampered(token: str) -> str:
    """The token with its signature's first character changed (the last carries bits base64 ignores)."""
    expires, user, mac = token.split(".")
    return f"{expires}.{user}.{'B' if mac[0] == 'A' else 'A'}{mac[1:]}"


def events_url(stack: Stack, order_id: str, token: str | None) -> str:
    query = "" if token is None else f"?token={token}"
    return f"{stack.notifier.url}/v1/orders/{order_id}/events{query}"


def page_url(stack: Stack, order_id: str, token: str | None) -> str:
    query = "" if token is None else f"?token={token}"
    return f"{stack.notifier.url}/orders/{order_id}{query}"


@pytest.fixture(params=[True, False], ids=["fast-path", "framework"])
async def stack(
    request: pytest.FixtureRequest, notifier: StartNotifier, broker: Broker, database_url: str, isolation: str
) -> AsyncIterator[Stack]:
    running = await notifier()
    settings = settings_for(
        PaymentsSettings,
        broker,
        database_url,
        isolation,
        psp_secrets={"sim": ["s"]},
        status_base_url=running.url,
        fast_path=request.param,
    )
    infra, app = await build_payments(settings)
    headers = await bearer(infra.keys, Scope.ORDERS_WRITE)
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://payments", headers=headers) as payments,
        httpx.AsyncClient(timeout=30) as browser,
    ):
        yield Stack(payments, running, browser)
    await infra.close()


async def test_an_orders_status_url_opens_its_page_and_event_stream(stack: Stack) -> None:
    placed = await stack.place("u1")
    assert placed["status_url"].startswith(f"{stack.notifier.url}/orders/{placed['order_id']}?token=")
    page = await stack.browser.get(placed["status_url"])
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert placed["order_id"] in page.text
    status, events = await stack.first_event(events_url(stack, placed["order_id"], token_of(placed["status_url"])))
    assert status == 200, events
    assert f'"order_id":"{placed["order_id"]}"' in events


async def test_a_bare_tampered_or_other_orders_link_gets_404_never_the_page(stack: Stack) -> None:
    mine, other = await stack.place("u1"), await stack.place("u2")
    order_id, token = mine["order_id"], token_of(mine["status_url"])
    expires, user, mac = token.split(".")
    later = f"{int(expires) + 3600}.{user}.{mac}"
    refused = {
        "bare": (order_id, None),
        "tampered signature": (order_id, tampered(token)),
        "extended expiry": (order_id, later),
        "another order's link": (other["order_id"], token),
        "not a token": (order_id, "x"),
    }
    for name, (target, used) in refused.items():
        page = await stack.browser.get(page_url(stack, target, used))
        assert page.status_code == 404, f"{name}: the page answered {page.status_code}"
        assert page.headers["content-type"].startswith("text/html"), name
        assert 'id="steps"' not in page.text, f"{name}: the page was shown"
        status, text = await stack.first_event(events_url(stack, target, used))
        assert status == 404, f"{name}: the event stream answered {status}"
        assert '"error":"unknown_order"' in text, name


async def test_an_expired_link_gets_404(stack: Stack) -> None:
    placed = await stack.place("u1")
    order_id = placed["order_id"]
    issued_long_ago = StatusLinks([STATUS_LINK_SECRET], now=lambda: time.time() - 3600)
    expired = issued_long_ago.token(order_id, "u1", ttl_s=60)
    assert (await stack.browser.get(page_url(stack, order_id, expired))).status_code == 404
    assert (await stack.first_event(events_url(stack, order_id, expired)))[0] == 404
    fresh = StatusLinks([STATUS_LINK_SECRET]).token(order_id, "u1", ttl_s=60)
    assert (await stack.browser.get(page_url(stack, order_id, fresh))).status_code == 200


async def test_a_link_naming_another_user_than_the_orders_gets_404(
    stack: Stack, broker: Broker, isolation: str
) -> None:
    placed = await stack.place("u1")
    order_id = placed["order_id"]
    await publish(broker, f"{isolation}.", change(order_id, OrderStatus.DELAYED, 2, user_id="u1"))
    await stack.notifier.wait_until_consumed(order_id, 1)
    for_someone_else = StatusLinks([STATUS_LINK_SECRET]).token(order_id, "u2")
    assert (await stack.browser.get(page_url(stack, order_id, for_someone_else))).status_code == 404
    assert (await stack.first_event(events_url(stack, order_id, for_someone_else)))[0] == 404
    assert (await stack.browser.get(placed["status_url"])).status_code == 200


async def test_the_platform_opens_any_page_with_an_orders_read_key_and_not_without(stack: Stack) -> None:
    order_id = (await stack.place("u1"))["order_id"]
    keys = stack.notifier.notifier.infra.keys
    reader, other = await bearer(keys, Scope.ORDERS_READ), await bearer(keys, Scope.SUPPORT_READ)
    for headers, expected in ((reader, 200), (other, 404)):
        assert (await stack.browser.get(page_url(stack, order_id, None), headers=headers)).status_code == expected
        assert (await stack.first_event(events_url(stack, order_id, None), headers))[0] == expected


async def test_a_device_subscribed_with_a_status_link_belongs_to_the_user_it_names(
    notifier: StartNotifier, push_service: PushService
) -> None:
    running = await notifier()
    links = StatusLinks([STATUS_LINK_SECRET])
    mine, theirs = links.token("ord_mine", "u-me"), links.token("ord_theirs", "u-them")
    device = push_service.subscribe("phone")
    async with httpx.AsyncClient(base_url=f"{running.url}/v1/orders") as browser:
        for order_id, token in (("ord_mine", None), ("ord_mine", theirs), ("ord_mine", tampered(mine))):
            refused = await browser.put(f"/{order_id}/subscriptions", params={"token": token or ""}, json=device)
            assert (refused.status_code, refused.json()["error"]) == (404, "unknown_order")
        made = await browser.put("/ord_mine/subscriptions", params={"token": mine}, json=device)
        assert made.status_code == 200, made.text
        assert made.json()["user_id"] == "u-me"
        sid = made.json()["subscription_id"]
        listed = await running.api.get(f"{running.url}/v1/users/u-me/subscriptions")
        assert [s["subscription_id"] for s in listed.json()["subscriptions"]] == [sid]
        gone = await browser.delete(f"/ord_theirs/subscriptions/{sid}", params={"token": theirs})
        assert (gone.status_code, gone.json()["error"]) == (404, "subscription_not_found")
        assert (await browser.delete(f"/ord_mine/subscriptions/{sid}", params={"token": mine})).status_code == 204
    assert (await running.api.get(f"{running.url}/v1/users/u-me/subscriptions")).json()["subscriptions"] == []
