"""Refunds reach the provider that took the money: payments on the real broker and PostgreSQL, paid through the
local provider server (WeChat Pay and Alipay, found paid by query), refunds an order on an IssueRefund at that
provider's refund endpoint, for the amount paid, under our refund id, with requests the official SDKs sign alike;
a refund whose answer was lost is queried before any retry and made once."""

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl

import httpx
import pytest
from alipay import AliPay
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3 import utils as wechatpay_utils

from contracts.codec import decode, deterministic_id, encode, envelope_for
from contracts.commands import IssueRefund
from contracts.events import RefundSucceeded
from contracts.topics import Topic
from credited.providers import wechatpay as local_wechatpay
from credited.providers.faults import Fault, Faults, Operation
from credited.providers.keys import LocalKeys, private_pem, public_pem
from credited.providers.notifier import NotifyKnobs
from credited.providers.server import LocalProvider
from credited.stack.processes import free_port
from payments.bootstrap import build as build_payments
from payments.config import Settings as PaymentsSettings
from payments.queries import QueryWorker
from servicekit.infrastructure import Infrastructure
from servicekit.kafka import KafkaPublisher
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_all
from tests.payments.providers.conftest import platform_cert_dir
from tests.service_settings import settings_for

CHANNELS = {"alipay": "alipay", "wechatpay": "wechat"}
AMOUNT = 1234
REFUND_METHODS = ("alipay.trade.refund", "alipay.trade.fastpay.refund.query")


@dataclass
class Seen:
    """A request as it reached the local provider."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode()))

    @property
    def refund_call(self) -> str | None:
        """Which refund call this is, in either protocol: "refund" (a request), "query", or None (another)."""
        if self.path.startswith("/v3/refund/domestic/refunds"):
            return "refund" if self.method == "POST" else "query"
        if self.path == "/gateway.do" and self.form.get("method") in REFUND_METHODS:
            return "refund" if self.form["method"] == REFUND_METHODS[0] else "query"
        return None


@dataclass
class Recorder:
    """ASGI middleware keeping every request the local provider receives, once its body is read."""

    app: ASGIApp
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        query = scope.get("query_string", b"")
        path = scope["raw_path"].decode() + (f"?{query.decode()}" if query else "")
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}

        async def listening() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self.seen.append(Seen(scope["method"], path, headers, b"".join(chunks)))
            return message

        await self.app(scope, listening, send)


class RecordingProvider(LocalProvider):
    """The local provider, keeping what it was asked."""

    seen: list[Seen]

    def app(self) -> Starlette:
        app = super().app()
        self.seen = []
        app.add_middleware(Recorder, seen=self.seen)
        return app

    def refund_calls(self, name: str, refund_id: str) -> list[str]:
        calls = []
        for seen in self.seen:
            call = seen.refund_call
            if call is None:
                continue
            ours = seen.path.endswith(f"/{refund_id}") or refund_id in seen.body.decode()
            if ours and (name == "wechatpay") == seen.path.startswith("/v3/"):
                calls.append(call)
        return calls


@pytest.fixture(scope="module")
def keys() -> LocalKeys:
    return LocalKeys.generate()


@pytest.fixture
async def provider(keys: LocalKeys) -> AsyncIterator[RecordingProvider]:
    """Drops every notification (payments finds payments by query); a timed-out answer is held 2.5 s."""
    server = RecordingProvider(free_port(), keys=keys, faults=Faults(hang_s=2.5), knobs=NotifyKnobs(drop_share=1.0))
    await server.start()
    try:
        yield server
    finally:
        await asyncio.wait_for(server.stop(), 10)


class Payments:
    """One payments instance with its consumers, outbox relay and query worker running."""

    def __init__(self, infra: Infrastructure, worker: QueryWorker, client: httpx.AsyncClient) -> None:
        self.infra, self.client = infra, client
        self.tasks = [asyncio.create_task(c.run()) for c in infra.consumers]
        self.tasks += [asyncio.create_task(infra.relay.run()), asyncio.create_task(worker.run())]

    @property
    def prefix(self) -> str:
        return self.infra.settings.topic_prefix

    async def paid_order(self, provider: LocalProvider, name: str) -> str:
        """An order paid at the local provider through `name`, known paid to payments (by query)."""
        body = {"user_id": "u-refund", "amount": AMOUNT, "currency": "CNY", "channel": CHANNELS[name]}
        answer = await self.client.post("/v1/orders", json=body)
        assert answer.status_code == 201, answer.text
        order_id = str(answer.json()["order_id"])
        trade_no = local_wechatpay.trade_no_for(order_id) if name == "wechatpay" else order_id
        provider.pay(name, trade_no, AMOUNT)

        async def paid() -> bool:
            return (await self.client.get(f"/v1/orders/{order_id}")).json()["payment_status"] == "succeeded"

        await eventually(paid, timeout_s=30)
        return order_id

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()
        with contextlib.suppress(Exception):
            await self.infra.close()


@pytest.fixture
async def payments(
    broker: Broker, database_url: str, isolation: str, provider: RecordingProvider
) -> AsyncIterator[Payments]:
    """payments as the local provider's merchant: queries a fraction of a second apart, requests given 1 s."""
    env = {k.removeprefix("PAYMENTS_").lower(): v for k, v in provider.keys.payments_env(provider.url).items()}
    options: dict[str, Any] = {
        **env,
        "provider_timeout_s": 1,
        "query_delay_s": 0.3,
        "query_max_interval_s": 0.5,
        "query_idle_s": 0.05,
    }
    infra, app = await build_payments(settings_for(PaymentsSettings, broker, database_url, isolation, **options))
    for consumer in infra.consumers:
        await consumer.start()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payments")
    client.headers.update(await bearer(infra.keys))
    started = Payments(infra, app.state.query_worker, client)
    try:
        yield started
    finally:
        await started.stop()


async def issue_refund(broker: Broker, payments: Payments, order_id: str) -> None:
    command = IssueRefund(
        order_id=order_id,
        user_id="u-refund",
        amount=AMOUNT,
        currency="CNY",
        reason="not credited",
        requested_at=datetime.now(UTC),
    )
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test-refunds")
    await publisher.start()
    try:
        envelope = envelope_for(command, producer="reconciler", event_id=f"refund-{order_id}")
        topic = Topic.PAYMENTS_COMMANDS.qualified(payments.prefix)
        await publisher.publish_many([(topic, encode(command, envelope))])
    finally:
        await publisher.stop()


async def refunds_announced(broker: Broker, payments: Payments, order_id: str) -> list[RefundSucceeded]:
    records = await read_all(broker.bootstrap, Topic.PAYMENTS_EVENTS.qualified(payments.prefix))
    events = (decode(r.value, r.headers)[0] for r in records)
    return [m for m in events if isinstance(m, RefundSucceeded) and m.order_id == order_id]


async def refunded(broker: Broker, payments: Payments, order_id: str) -> RefundSucceeded:
    async def announced() -> bool:
        return bool(await refunds_announced(broker, payments, order_id))

    await eventually(announced, timeout_s=60)
    (succeeded,) = await refunds_announced(broker, payments, order_id)
    return succeeded


def the_wechat_pay_sdk_signs_it_alike(seen: Seen, keys: LocalKeys, directory: Path) -> None:
    sdk = WeChatPay(
        wechatpay_type=WeChatPayType.NATIVE,
        mchid=keys.mchid,
        private_key=private_pem(keys.wechat_merchant_key),
        cert_serial_no=f"{keys.merchant_certificate.serial_number:X}",
        appid=keys.wechat_appid,
        apiv3_key=keys.apiv3_key,
        cert_dir=platform_cert_dir(keys, directory),
    )
    fields = dict(re.findall(r'(\w+)="([^"]*)"', seen.headers["authorization"]))
    # The SDK signs with the clock's time and a nonce we hand it: give it ours.
    with mock.patch.object(wechatpay_utils.time, "time", return_value=int(fields["timestamp"])):
        theirs = wechatpay_utils.build_authorization(
            seen.path,
            seen.method,
            keys.mchid,
            fields["serial_no"],
            sdk._core._private_key,
            seen.body.decode() or None,
            nonce_str=fields["nonce_str"],
        )
    assert seen.headers["authorization"] == theirs


def the_alipay_sdk_signs_it_alike(seen: Seen, keys: LocalKeys) -> None:
    sdk = AliPay(
        appid=keys.alipay_app_id,
        app_private_key_string=private_pem(keys.alipay_app_key),
        alipay_public_key_string=public_pem(keys.alipay_key.public_key()),
    )
    params = seen.form
    sign = params.pop("sign")
    assert dict(parse_qsl(sdk.sign_data(dict(params))))["sign"] == sign  # the SDK orders and signs them itself


def asked_for(name: str, seen: Seen) -> tuple[str, str, int]:
    """(order's trade number, refund id, amount in fen) a refund request asked for, read in its protocol."""
    if name == "wechatpay":
        body = json.loads(seen.body)
        return body["transaction_id"], body["out_refund_no"], body["amount"]["refund"]
    biz = json.loads(seen.form["biz_content"])
    yuan, _, fen = biz["refund_amount"].partition(".")
    return biz["out_trade_no"], biz["out_request_no"], int(yuan) * 100 + int(fen.ljust(2, "0"))


@pytest.mark.parametrize("name", ["wechatpay", "alipay"])
async def test_a_refund_reaches_the_refund_endpoint_of_the_provider_that_took_the_payment_and_succeeds(
    name: str, broker: Broker, provider: RecordingProvider, payments: Payments, keys: LocalKeys, tmp_path: Path
) -> None:
    order_id = await payments.paid_order(provider, name)
    await issue_refund(broker, payments, order_id)

    succeeded = await refunded(broker, payments, order_id)
    refund_id = deterministic_id("refund", order_id)
    trade = provider.book.get(name, local_wechatpay.trade_no_for(order_id) if name == "wechatpay" else order_id)
    assert trade is not None and list(trade.refunds) == [refund_id]
    assert trade.refunds[refund_id].amount == AMOUNT == succeeded.amount
    requests = [s for s in provider.seen if s.refund_call == "refund"]
    assert len(requests) == 1 and provider.refund_calls(name, refund_id) == ["refund"]
    (request,) = requests
    if name == "wechatpay":
        assert asked_for(name, request) == (trade.txn_id, refund_id, AMOUNT)
        the_wechat_pay_sdk_signs_it_alike(request, keys, tmp_path)
    else:
        assert asked_for(name, request) == (order_id, refund_id, AMOUNT)
        the_alipay_sdk_signs_it_alike(request, keys)
    stored = await payments.infra.pool.fetchrow("SELECT status, attempts FROM refunds WHERE order_id = $1", order_id)
    assert (stored["status"], stored["attempts"]) == ("succeeded", 1)


@pytest.mark.parametrize("name", ["wechatpay", "alipay"])
async def test_a_refund_whose_answer_timed_out_is_queried_before_any_retry_and_made_once(
    name: str, broker: Broker, provider: RecordingProvider, payments: Payments
) -> None:
    order_id = await payments.paid_order(provider, name)
    provider.faults.script(Operation.REFUND, Fault.TIMEOUT)  # done at the provider, the answer held past 1 s
    await issue_refund(broker, payments, order_id)

    await refunded(broker, payments, order_id)
    refund_id = deterministic_id("refund", order_id)
    assert provider.refund_calls(name, refund_id) == ["refund", "query"]
    assert provider.faults.counts[f"{Operation.REFUND}:{Fault.TIMEOUT}"] == 1
    trade = provider.book.get(name, local_wechatpay.trade_no_for(order_id) if name == "wechatpay" else order_id)
    assert trade is not None and list(trade.refunds) == [refund_id] and trade.refunded == AMOUNT
