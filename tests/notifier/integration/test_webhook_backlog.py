"""A backlog of deliveries to a webhook answering within its timeout, but slower than its share of connections
drains them (as after a broker outage, on a loaded machine), sends nothing twice: the timeout counts from when a
request has a connection, not from when it joined the queue for one. Real broker and PostgreSQL, the notifier in
the test's event loop, a webhook receiver that counts what reaches it."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.types import Message, Receive, Scope, Send

from contracts.events import OrderStatus
from credited.stack.processes import free_port
from harness.simulator.receiver import WebhookReceiver
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import change, publish

ANSWER_S = 0.5
TIMEOUT_S = 2.0  # four times the receiver's answer: a retry can only come from time spent queueing
ORDERS = 400  # 50 webhook connections at two answers a second each: the last requests queue for about 4 s


class SlowWebhook(WebhookReceiver):
    """Records each notification as it comes, then answers `ANSWER_S` later."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def answer_late(message: Message) -> None:
            if message["type"] == "http.response.start":
                await asyncio.sleep(ANSWER_S)
            await send(message)

        await super().__call__(scope, receive, answer_late)


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookReceiver]:
    receiver = SlowWebhook(free_port(), "hook-secret")
    await receiver.start()
    yield receiver
    await receiver.stop()


async def test_a_backlog_queued_for_the_webhook_s_connections_reaches_it_once_each(
    notifier: StartNotifier, webhook: WebhookReceiver, broker: Broker, isolation: str
) -> None:
    running = await notifier(webhook_url=webhook.url, webhook_secret=webhook.secret, webhook_timeout_s=TIMEOUT_S)
    await publish(broker, f"{isolation}.", *[change(f"ord_{i}", OrderStatus.CREDITED, 2) for i in range(ORDERS)])
    await eventually(lambda: len(webhook.received.payloads) >= ORDERS, timeout_s=120)
    await eventually(running.settled, timeout_s=120)
    repeated = {nid: n for nid, n in webhook.received.deliveries.items() if n > 1}
    assert repeated == {}, f"{len(repeated)} notifications reached the webhook more than once"
