"""In production payments takes payments from real providers only, each for its own channel: on the real broker and
PostgreSQL, a callback signed with a simulated provider's secret pays nothing, a real provider's callback for an
order of another provider's channel is refused and kept for audit with its reason, and `python -m payments` refuses
to start on a simulated provider's secret or without a real provider, saying what to configure."""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from contracts.codec import decode
from contracts.events import PaymentSucceeded
from contracts.topics import Topic
from credited.providers.faults import Faults
from credited.providers.keys import LocalKeys
from credited.providers.notifier import NotifyKnobs, httpx_post
from credited.providers.server import LocalProvider
from credited.stack.processes import free_port
from payments.bootstrap import build as build_payments
from payments.config import Settings as PaymentsSettings
from servicekit.infrastructure import Infrastructure
from servicekit.signatures import sign
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_all
from tests.service_settings import settings_for

SECRET = "Zq3v9LrT0bXe5mWk8yHn2cJd7fGs4pAu-psp"
STRONG = "Zq3v9LrT0bXe5mWk8yHn2cJd7fGs4pAu"


@pytest.fixture(scope="module")
def keys() -> LocalKeys:
    return LocalKeys.generate()


@pytest.fixture
async def provider(keys: LocalKeys) -> AsyncIterator[LocalProvider]:
    server = LocalProvider(free_port(), keys=keys, faults=Faults(), knobs=NotifyKnobs())
    await server.start()
    try:
        yield server
    finally:
        await asyncio.wait_for(server.stop(), 10)


async def callbacks_of(infra: Infrastructure, order_id: str) -> list[tuple[str, str, str]]:
    rows = await infra.pool.fetch("SELECT provider, outcome, reason FROM callbacks WHERE order_id = $1", order_id)
    return [(r["provider"], r["outcome"], r["reason"]) for r in rows]


async def announced_paid(broker: Broker, infra: Infrastructure, order_id: str) -> int:
    await eventually(lambda: infra.pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout_s=30)
    topic = Topic.PAYMENTS_EVENTS.qualified(infra.settings.topic_prefix)
    decoded = [decode(r.value, r.headers)[0] for r in await read_all(broker.bootstrap, topic)]
    return sum(1 for m in decoded if isinstance(m, PaymentSucceeded) and m.order_id == order_id)


async def place(client: httpx.AsyncClient, channel: str) -> str:
    body = {"user_id": "u-prod", "amount": 600, "currency": "CNY", "channel": channel}
    answer = await client.post("/v1/orders", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["order_id"])


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "framework"])
async def test_in_production_a_callback_signed_with_a_psp_secret_pays_no_order_of_any_channel(
    fast: bool, broker: Broker, database_url: str, isolation: str
) -> None:
    settings = settings_for(
        PaymentsSettings, broker, database_url, f"{isolation}{int(fast)}", psp_secrets={"sim": [SECRET]}, fast_path=fast
    )
    assert settings.environment == "production"
    infra, app = await build_payments(settings)
    relay = asyncio.create_task(infra.relay.run())
    try:
        transport = httpx.ASGITransport(app=app)
        headers = await bearer(infra.keys)
        async with httpx.AsyncClient(transport=transport, base_url="http://payments", headers=headers) as client:
            for channel in ("alipay", "wechat", "card"):
                order_id = await place(client, channel)
                body = json.dumps(
                    {
                        "order_id": order_id,
                        "provider_txn_id": f"tx-{channel}",
                        "status": "succeeded",
                        "amount": 600,
                        "currency": "CNY",
                        "paid_at": "2026-11-22T08:30:00Z",
                    }
                ).encode()
                signed = {"X-Signature": sign(SECRET, body, int(time.time()))}
                answer = await client.post("/v1/psp/sim/callbacks", content=body, headers=signed)
                assert (answer.status_code, answer.json()["error"]) == (404, "unknown_provider"), answer.text
                assert (await client.get(f"/v1/orders/{order_id}")).json()["payment_status"] == "pending"
                assert await announced_paid(broker, infra, order_id) == 0
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        with contextlib.suppress(Exception):
            await infra.close()


async def test_in_production_a_providers_callback_for_an_order_of_another_providers_channel_is_refused_and_recorded(
    broker: Broker, database_url: str, isolation: str, provider: LocalProvider
) -> None:
    env = {k.removeprefix("PAYMENTS_").lower(): v for k, v in provider.keys.payments_env(provider.url).items()}
    options: dict[str, Any] = {**env, "query_delay_s": 60}  # no query: only the callback speaks
    infra, app = await build_payments(settings_for(PaymentsSettings, broker, database_url, isolation, **options))
    relay = asyncio.create_task(infra.relay.run())
    try:
        transport = httpx.ASGITransport(app=app)
        headers = await bearer(infra.keys)
        async with httpx.AsyncClient(transport=transport, base_url="http://payments", headers=headers) as client:
            provider.notifier.post = httpx_post(client)
            provider.notifier.urls["alipay"] = "http://payments/v1/psp/alipay/callbacks"
            order_id = await place(client, "wechat")  # WeChat Pay's to pay, by channel_providers

            delivery = provider.pay("alipay", order_id, 600)  # Alipay, validly signed, says it paid it
            await provider.notifier.drain()

            assert not delivery.accepted and delivery.statuses == [409]  # "fail": Alipay would send it again
            assert (await client.get(f"/v1/orders/{order_id}")).json()["payment_status"] == "pending"
            [(name, outcome, reason)] = await callbacks_of(infra, order_id)
            assert (name, outcome, reason.split(":")[0]) == ("alipay", "rejected", "wrong_provider"), reason
            assert await announced_paid(broker, infra, order_id) == 0

            own = await place(client, "alipay")  # Alipay still pays its own channel's orders
            assert provider.pay("alipay", own, 600).notification.trade_no == own
            await provider.notifier.drain()
            assert (await client.get(f"/v1/orders/{own}")).json()["payment_status"] == "succeeded"
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        with contextlib.suppress(Exception):
            await infra.close()


def start_in_production(keys: LocalKeys | None, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m payments` as deployed, on strong secrets and addresses where nothing answers: it either refuses
    to start (exit 1) or gets past the refusal and waits for its database, which the deadline turns into a failure."""
    ours = ("CREDITED_", "PAYMENTS_", "KAFKA_", "DATABASE_", "PG")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    strong = {
        "DATABASE_URL": f"postgresql://credited:{STRONG}@127.0.0.1:9/credited",
        "KAFKA_BOOTSTRAP": "127.0.0.1:9",
        "CREDITED_STATUS_LINK_SECRET": STRONG + "-link",
        "PAYMENTS_HTTP_PORT": str(free_port()),
        "PAYMENTS_METRICS_PORT": str(free_port()),  # its default, the HTTP port + 1000, nobody reserved
        **(keys.payments_env("http://127.0.0.1:9") if keys is not None else {}),
        **env,
    }
    try:
        return subprocess.run(
            [sys.executable, "-m", "payments"], env={**inherited, **strong}, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"payments started in production: {exc.stderr!r}") from exc


def test_payments_refuses_to_start_in_production_on_a_simulated_providers_secret_and_says_what_to_configure(
    keys: LocalKeys,
) -> None:
    started = start_in_production(keys, PAYMENTS_PSP_SECRET_SIM=SECRET)
    assert started.returncode == 1, started.stderr
    assert started.stderr.strip().splitlines()[-1] == (
        "payments refuses to start in production: PAYMENTS_PSP_SECRET_SIM is set, but the simulated provider it "
        "signs for runs only in development. Unset every PAYMENTS_PSP_SECRET_<NAME> and configure WeChat Pay "
        "(PAYMENTS_WECHATPAY_MCHID and its keys) or Alipay (PAYMENTS_ALIPAY_APP_ID and its keys) (or "
        "CREDITED_ENV=development on a laptop)."
    )
    assert SECRET not in started.stderr and "Traceback" not in started.stderr


def test_payments_refuses_to_start_in_production_without_a_real_provider_whatever_hmac_secret_it_has() -> None:
    started = start_in_production(None, PAYMENTS_PSP_SECRET_SIM=SECRET)
    assert started.returncode == 1, started.stderr
    refusal = started.stderr.strip().splitlines()[-1]
    assert refusal.startswith("payments refuses to start in production: "), started.stderr
    assert "no real payment provider is configured (WeChat Pay or Alipay)" in refusal
    assert "configure WeChat Pay (PAYMENTS_WECHATPAY_MCHID and its keys) or Alipay" in refusal
