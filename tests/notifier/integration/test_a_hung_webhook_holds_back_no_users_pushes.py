"""A platform webhook that accepts connections and never answers, while users' devices answer at once: the webhook's
deliveries wait for its own connections (its limit of deliveries in flight), never in the slots of users' pushes.
Real broker and PostgreSQL, the notifier in the test's event loop."""

import asyncio
import time

import pytest
from aiohttp import web

from contracts.events import OrderStatus
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.loopback_http import serving
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import change, publish
from tests.notifier.push_service import PushService

ORDERS = 600  # 600 webhook deliveries: twelve times its 50 connections, more than twice the pushes' 256 slots


async def hang(request: web.Request) -> web.Response:
    await asyncio.sleep(3600)
    return web.Response(status=204)


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_a_hung_platform_webhook_does_not_hold_back_users_pushes(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str
) -> None:
    """Each webhook request is held for its 5 s timeout. Sharing the users' pushes' slots, webhook deliveries
    filled them all, waiting for one of the webhook's 50 connections, and pushes waited behind them (those that
    waited past half a lease until their lease ended): a slow platform backend made users' notifications late by
    tens of seconds. Every push now reaches a device that answers at once within seconds of its status change."""
    app = web.Application()
    app.router.add_post("/hook", hang)
    async with serving(app) as port:
        running = await notifier(
            webhook_url=f"http://127.0.0.1:{port}/hook",
            webhook_secret="hook-secret",
            webhook_timeout_s=5.0,
            max_attempts=20,
        )
        subscribed = await running.api.put(
            f"{running.url}/v1/users/u1/subscriptions", json=push_service.subscribe("phone")
        )
        assert subscribed.is_success, subscribed.text
        started = time.monotonic()
        await publish(broker, f"{isolation}.", *[change(f"ord_{i}", OrderStatus.CREDITED, 2) for i in range(ORDERS)])
        await eventually(lambda: len(push_service.received) >= ORDERS, timeout_s=120)
        took = [p.at - started for p in push_service.received]
        late = sum(1 for t in took if t > 5.0)
        assert late == 0, (
            f"{late} of {ORDERS} pushes reached a device that answers at once more than 5 s after their status"
            f" changed (the last after {max(took):.1f} s): they waited behind the hung webhook's deliveries"
        )
