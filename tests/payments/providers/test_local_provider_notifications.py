"""The local provider's notifications over HTTP to a merchant that checks them with our adapters and
answers in each provider's form: delivered, dropped, repeated, delayed, and sent again when refused."""

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from credited.providers import wechatpay as local_wechatpay
from credited.providers.faults import Faults
from credited.providers.keys import LocalKeys
from credited.providers.notifier import SENDS_IN_FLIGHT, NotifyKnobs
from credited.providers.server import LocalProvider
from credited.stack.processes import free_port
from payments.domain import CallbackAck, CallbackRejected, PaymentNotice
from payments.ports import PaymentProvider
from servicekit.http import EmbeddedServer
from tests.payments.providers.conftest import alipay, wechatpay


@dataclass
class Merchant:
    """A callback endpoint built from the adapters the way payments' route will be: verify, then answer
    in the provider's form. It refuses the first `refuse_first` notifications it verifies."""

    adapters: dict[str, PaymentProvider]
    refuse_first: int = 0
    notices: list[PaymentNotice] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)

    async def callback(self, request: Request) -> Response:
        adapter = self.adapters[request.path_params["provider"]]
        try:
            verified = await adapter.verify_callback(await request.body(), request.headers)
        except CallbackRejected as exc:
            self.rejections.append(exc.code)
            reply = adapter.reply(CallbackAck(exc.status_code, exc.code, exc.detail))
        else:
            if self.refuse_first > 0:
                self.refuse_first -= 1
                reply = adapter.reply(CallbackAck(503, "busy", "try again"))
            else:
                assert verified.notice is not None
                self.notices.append(verified.notice)
                reply = adapter.reply(CallbackAck(200, "applied", "payment succeeded", verified.order_id))
        return Response(reply.body, reply.status_code, media_type=reply.content_type)


@pytest.fixture
async def merchant(local_keys: LocalKeys) -> AsyncIterator[tuple[Merchant, int]]:
    port = free_port()
    shop = Merchant({"wechatpay": wechatpay(local_keys), "alipay": alipay(local_keys)})
    app = Starlette(routes=[Route("/v1/psp/{provider}/callbacks", shop.callback, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", loop="none")
    server = EmbeddedServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield shop, port
    finally:
        server.should_exit = True
        await task


async def started(keys: LocalKeys, port: int, knobs: NotifyKnobs) -> LocalProvider:
    base = f"http://127.0.0.1:{port}/v1/psp"
    urls = {"wechatpay": f"{base}/wechatpay/callbacks", "alipay": f"{base}/alipay/callbacks"}
    provider = LocalProvider(free_port(), keys=keys, knobs=knobs, faults=Faults(), notify_urls=urls)
    await provider.start()
    return provider


def trade_no(name: str, n: int) -> str:
    order_id = f"ord_{n:032x}"
    return local_wechatpay.trade_no_for(order_id) if name == "wechatpay" else order_id


async def test_every_notification_reaches_the_merchant_and_is_verified(
    local_keys: LocalKeys, merchant: tuple[Merchant, int]
) -> None:
    shop, port = merchant
    provider = await started(local_keys, port, NotifyKnobs(max_delay_s=0.2, seed=1))
    try:
        for n in range(10):
            provider.pay("wechatpay" if n % 2 else "alipay", trade_no("wechatpay" if n % 2 else "alipay", n), 100 + n)
        await provider.notifier.drain()
    finally:
        await provider.stop()
    assert shop.rejections == []
    assert sorted(n.amount for n in shop.notices) == [100 + n for n in range(10)]
    assert {n.provider for n in shop.notices} == {"wechatpay", "alipay"}
    assert all(d.accepted for d in provider.notifier.deliveries)


async def test_the_knobs_drop_and_repeat_notifications_and_say_which(
    local_keys: LocalKeys, merchant: tuple[Merchant, int]
) -> None:
    shop, port = merchant
    provider = await started(local_keys, port, NotifyKnobs(drop_share=0.3, duplicate_share=0.3, seed=42))
    try:
        for n in range(40):
            provider.pay("alipay", trade_no("alipay", n), 600)
        await provider.notifier.drain()
        stats = provider.stats()
    finally:
        await provider.stop()
    dropped = {d.notification.trade_no for d in provider.notifier.deliveries if d.dropped}
    received = [n.order_id for n in shop.notices]
    assert 0 < len(dropped) < 40 and stats["sends"]["duplicated"] > 0  # seed 42 does both
    assert set(received) == {trade_no("alipay", n) for n in range(40)} - dropped
    assert len(received) == 40 - len(dropped) + stats["sends"]["duplicated"]
    assert len(stats["dropped"]) == len(dropped)


async def test_a_burst_of_notifications_is_posted_a_bounded_number_at_a_time_and_every_one_arrives(
    local_keys: LocalKeys, merchant: tuple[Merchant, int]
) -> None:
    """More notifications at once than the provider posts at once (a backlog when the stack is behind): the
    rest wait in the notifier, not in httpx's connection pool (see SENDS_IN_FLIGHT), and none is lost."""
    shop, port = merchant
    burst = 5 * SENDS_IN_FLIGHT
    provider = await started(local_keys, port, NotifyKnobs())
    try:
        for n in range(burst):
            provider.pay("alipay", trade_no("alipay", n), 600)
        await provider.notifier.drain()
    finally:
        await provider.stop()
    assert provider.notifier.most_in_flight == SENDS_IN_FLIGHT
    assert sorted(n.order_id for n in shop.notices) == sorted(trade_no("alipay", n) for n in range(burst))
    assert all(d.accepted for d in provider.notifier.deliveries)


async def test_a_refused_notification_is_sent_again(local_keys: LocalKeys, merchant: tuple[Merchant, int]) -> None:
    shop, port = merchant
    shop.refuse_first = 2
    provider = await started(local_keys, port, NotifyKnobs(retry_delays_s=(0.05, 0.05, 0.05)))
    try:
        delivery = provider.pay("wechatpay", trade_no("wechatpay", 1), 600)
        await provider.notifier.drain()
    finally:
        await provider.stop()
    assert delivery.statuses == [503, 503, 204]
    assert delivery.accepted and len(shop.notices) == 1


async def test_a_notification_held_back_goes_out_after_its_delay(
    local_keys: LocalKeys, merchant: tuple[Merchant, int]
) -> None:
    shop, port = merchant
    provider = await started(local_keys, port, NotifyKnobs(max_delay_s=0.5, seed=3))
    try:
        paid_at = time.monotonic()
        delivery = provider.pay("alipay", trade_no("alipay", 1), 600)
        await provider.notifier.drain()
    finally:
        await provider.stop()
    assert len(delivery.delays) == 1 and 0 < delivery.delays[0] <= 0.5
    assert delivery.sent_at[0] - paid_at >= delivery.delays[0]
    assert delivery.accepted and len(shop.notices) == 1
