"""Users register devices and choose a language through the notifier's HTTP API; FCM goes to its
configured endpoint (a loopback stand-in here)."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from contracts.events import OrderStatus
from credited.stack.processes import free_port
from notifier import domain
from servicekit.http import EmbeddedServer
from servicekit.links import StatusLinks
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import change, publish
from tests.notifier.push_service import PushService
from tests.service_settings import STATUS_LINK_SECRET


async def test_a_subscription_outside_the_known_push_services_or_with_bad_keys_is_refused(
    notifier: StartNotifier, push_service: PushService
) -> None:
    running = await notifier()
    url = f"{running.url}/v1/users/u1/subscriptions"
    good = push_service.subscribe("phone")
    elsewhere = {**good, "endpoint": "http://10.1.2.3/push/x"}
    assert (await running.api.put(url, json=elsewhere)).json()["error"] == "push_service_not_allowed"
    bad_keys = {**good, "keys": {"p256dh": "AAAA", "auth": good["keys"]["auth"]}}
    assert (await running.api.put(url, json=bad_keys)).json()["error"] == "invalid_subscription_keys"
    assert (await running.api.put(url, json={"channel": "webpush"})).status_code == 422
    fcm = await running.api.put(url, json={"channel": "fcm", "token": "t"})
    assert (fcm.status_code, fcm.json()["error"]) == (409, "channel_unavailable")
    assert (await running.api.get(url)).json()["subscriptions"] == []


async def test_a_device_is_registered_once_listed_without_its_keys_and_removed(
    notifier: StartNotifier, push_service: PushService
) -> None:
    running = await notifier()
    url = f"{running.url}/v1/users/u1/subscriptions"
    subscription = push_service.subscribe("phone")
    first = (await running.api.put(url, json=subscription)).json()["subscription_id"]
    again = (await running.api.put(url, json=subscription)).json()["subscription_id"]
    assert first == again
    (listed,) = (await running.api.get(url)).json()["subscriptions"]
    assert listed["subscription_id"] == first and listed["endpoint_host"] == f"127.0.0.1:{push_service.port}"
    assert "keys" not in listed and "p256dh" not in str(listed)
    assert (await running.api.delete(f"{url}/{first}")).status_code == 204
    assert (await running.api.delete(f"{url}/{first}")).status_code == 404
    key = (await running.api.get(f"{running.url}/v1/push/vapid-public-key")).json()["public_key"]
    assert key == push_service.vapid_public_key


async def test_a_chosen_locale_and_time_zone_are_kept_and_an_unsupported_locale_falls_back(
    notifier: StartNotifier,
) -> None:
    running = await notifier()
    url = f"{running.url}/v1/users/u1/locale"
    unset = {"user_id": "u1", "locale": None, "effective": "en", "time_zone": None}
    assert (await running.api.get(url)).json() == unset
    assert (await running.api.put(url, json={"locale": "zh-MO"})).json()["effective"] == "zh-HK"
    chosen = await running.api.put(url, json={"locale": "zh-TW", "time_zone": "Asia/Taipei"})
    assert chosen.json() == {"user_id": "u1", "locale": "zh-TW", "effective": "zh-TW", "time_zone": "Asia/Taipei"}
    assert (await running.api.put(url, json={"locale": "en-GB"})).json()["time_zone"] == "Asia/Taipei"  # kept
    assert (await running.api.put(url, json={"locale": "en", "time_zone": None})).json()["time_zone"] is None
    assert (await running.api.put(url, json={"locale": "<script>"})).status_code == 422
    unknown = await running.api.put(url, json={"locale": "en", "time_zone": "Mars/Olympus_Mons"})
    assert unknown.status_code == 422 and unknown.json()["error"]
    for directory in ("America", "Etc"):  # directories of the zone database: ZoneInfo raises IsADirectoryError
        answer = await running.api.put(url, json={"locale": "en", "time_zone": directory})
        assert (answer.status_code, answer.json()["error"]) == (422, "invalid_request"), answer.text


async def test_a_push_endpoint_with_a_port_out_of_range_or_a_broken_host_is_refused_422_naming_it(
    notifier: StartNotifier, push_service: PushService
) -> None:
    running = await notifier()
    device = push_service.subscribe("phone")
    token = StatusLinks([STATUS_LINK_SECRET]).token("ord_1", "u1")
    for endpoint in ("http://127.0.0.1:99999/push/phone", "http://127.0.0.1:port/push/phone", "http://[::1/push"):
        body = {**device, "endpoint": endpoint}
        by_platform = await running.api.put(f"{running.url}/v1/users/u1/subscriptions", json=body)
        async with httpx.AsyncClient() as browser:  # the status page's own registration, with the order's link
            by_link = await browser.put(f"{running.url}/v1/orders/ord_1/subscriptions?token={token}", json=body)
        for answer in (by_platform, by_link):
            assert (answer.status_code, answer.json()["error"]) == (422, "invalid_endpoint"), (endpoint, answer.text)
            assert "not a valid URL" in answer.json()["detail"]
    assert (await running.api.get(f"{running.url}/v1/users/u1/subscriptions")).json()["subscriptions"] == []


class FakeFcm:
    """Answers FCM v1 sends on loopback and keeps what it was sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def _send(self, request: Request) -> JSONResponse:
        self.requests.append((dict(request.headers), orjson.loads(await request.body())))
        return JSONResponse({"name": f"projects/p/messages/{len(self.requests)}"})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/projects/p/messages:send"


@pytest.fixture
async def fake_fcm() -> AsyncIterator[FakeFcm]:
    fcm = FakeFcm()
    app = Starlette(routes=[Route("/v1/projects/p/messages:send", fcm._send, methods=["POST"])])
    server = EmbeddedServer(uvicorn.Config(app, host="127.0.0.1", port=fcm.port, log_level="warning", loop="none"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # uvicorn exposes a flag, not an event
        await asyncio.sleep(0.02)
    yield fcm
    server.should_exit = True
    await task


async def test_an_app_registered_with_fcm_gets_the_notification_at_the_configured_endpoint(
    notifier: StartNotifier, fake_fcm: FakeFcm, broker: Broker, isolation: str
) -> None:
    running = await notifier(fcm_endpoint=fake_fcm.url, fcm_bearer_token="static-token")
    response = await running.api.put(
        f"{running.url}/v1/users/u1/subscriptions", json={"channel": "fcm", "token": "device-token"}
    )
    assert response.status_code == 200, response.text
    await publish(broker, f"{isolation}.", change("ord_1", OrderStatus.CREDITED, 2))
    await eventually(lambda: len(fake_fcm.requests) >= 1)
    await eventually(running.settled)
    ((headers, body),) = fake_fcm.requests
    assert headers["authorization"] == "Bearer static-token"
    message = body["message"]
    assert message["token"] == "device-token"
    assert message["notification"]["title"] == "Top-up credited"
    assert message["android"]["collapse_key"] == domain.push_topic("ord_1")


async def test_a_user_past_the_device_bound_gets_409_until_one_is_removed(
    notifier: StartNotifier, push_service: PushService
) -> None:
    bound = 2
    running = await notifier(max_subscriptions_per_user=bound)
    url = f"{running.url}/v1/users/u1/subscriptions"
    ids = [
        (await running.api.put(url, json=push_service.subscribe(f"d{i}"))).json()["subscription_id"]
        for i in range(bound)
    ]
    past = await running.api.put(url, json=push_service.subscribe("one-more"))
    assert past.status_code == 409
    assert past.json() == {
        "error": "too_many_subscriptions",
        "detail": f"a user may have at most {bound} devices; remove one first",
    }
    assert (await running.api.put(url, json=push_service.subscribe("d0"))).status_code == 200  # a refresh
    other_user = await running.api.put(f"{running.url}/v1/users/u2/subscriptions", json=push_service.subscribe("x"))
    assert other_user.status_code == 200
    assert (await running.api.delete(f"{url}/{ids[0]}")).status_code == 204
    assert (await running.api.put(url, json=push_service.subscribe("one-more"))).status_code == 200
    assert len((await running.api.get(url)).json()["subscriptions"]) == bound
