"""The notifier never becomes a way into its own network: a push endpoint on a loopback address is refused at
registration outside development mode, and a push service or webhook answering 302 to the cloud metadata
address fails its delivery at once, with the refused address as the reason, without following the redirect."""

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from contracts.events import OrderStatus
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.loopback_http import serving
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import change, dead_letters, header, publish
from tests.notifier.push_service import PushService

METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"


@pytest.fixture
async def redirector() -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback receiver answering every request 302 to the cloud metadata service; yields its URL and the
    paths it was asked for."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        raise web.HTTPFound(METADATA)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with serving(app) as port:
        yield f"http://127.0.0.1:{port}", seen


async def test_a_push_endpoint_on_127_0_0_1_is_refused_at_registration_outside_development_mode(
    notifier: StartNotifier, push_service: PushService
) -> None:
    running = await notifier(environment="production", webpush_allow_http=False)
    url = f"{running.url}/v1/users/u1/subscriptions"
    on_loopback = {**push_service.subscribe("phone"), "endpoint": f"https://127.0.0.1:{push_service.port}/push/phone"}
    answer = await running.api.put(url, json=on_loopback)
    assert answer.status_code == 422, answer.text
    assert answer.json() == {
        "error": "push_endpoint_refused",
        "detail": "the push endpoint is refused: 127.0.0.1 is a loopback address",
    }
    assert (await running.api.get(url)).json()["subscriptions"] == []
    assert push_service.received == []


async def test_a_push_service_and_a_webhook_redirecting_to_the_metadata_address_fail_naming_it(
    notifier: StartNotifier,
    push_service: PushService,
    redirector: tuple[str, list[str]],
    broker: Broker,
    isolation: str,
) -> None:
    base, seen = redirector
    # Development mode lets the notifier reach the loopback receiver; cloud metadata is refused in every mode.
    running = await notifier(webhook_url=f"{base}/hook", webhook_secret="hook-secret")
    device = {**push_service.subscribe("phone"), "endpoint": f"{base}/push/phone"}
    subscribed = await running.api.put(f"{running.url}/v1/users/u1/subscriptions", json=device)
    assert subscribed.status_code == 200, subscribed.text
    prefix = f"{isolation}."
    await publish(broker, prefix, change("ord_1", OrderStatus.CREDITED, 2))
    await eventually(lambda: len(seen) >= 2, timeout_s=60)
    await eventually(running.settled, timeout_s=60)

    async def both_dead_lettered() -> bool:
        return len(await dead_letters(broker, prefix)) >= 2

    await eventually(both_dead_lettered, timeout_s=60)

    reasons = {header(r, "dlq_channel"): header(r, "dlq_reason") for r in await dead_letters(broker, prefix)}
    assert set(reasons) == {"webpush", "webhook"}
    for reason in reasons.values():
        assert "169.254.169.254 is a cloud metadata address" in reason, reason
    assert sorted(seen) == ["/hook", "/push/phone"]  # each asked once: a refusal is not retried
    assert push_service.received == []
