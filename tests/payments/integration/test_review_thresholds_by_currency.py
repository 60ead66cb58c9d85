"""The risk review's first top-up threshold, per currency, through payments' HTTP API on the real PostgreSQL:
minor units differ by currency (a fen is 1/100 yuan, a won is a whole won), so one number cannot mean the same
money in CNY and in KRW."""

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from payments.bootstrap import build
from payments.config import Settings
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.payments.sim_callbacks import paid_notice, signed
from tests.service_settings import settings_for

CNY_ABOVE = 50_000
"""500.00 CNY: the threshold the platform set first, for CNY, as the single number for every currency."""
KRW_ABOVE = 1_000_000
"""1,000,000 KRW (about 5,000 CNY): the platform's threshold for won, which has no minor unit."""


@pytest.fixture
async def client(
    broker: Broker, database_url: str, isolation: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("PAYMENTS_REVIEW_FIRST_TOPUP_ABOVE_MINOR", str(CNY_ABOVE))
    monkeypatch.setenv("PAYMENTS_REVIEW_FIRST_TOPUP_ABOVE", json.dumps({"KRW": KRW_ABOVE}))
    settings = settings_for(
        Settings, broker, database_url, isolation, psp_secrets={"sim": ["sim-secret"]}, environment="development"
    )
    infra, app = await build(settings)
    relay = asyncio.create_task(infra.relay.run())
    headers = await bearer(infra.keys)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://payments", headers=headers) as http:
        yield http
    relay.cancel()
    await asyncio.gather(relay, return_exceptions=True)
    await infra.close()


async def first_topup(client: httpx.AsyncClient, user: str, amount: int, currency: str) -> dict[str, object]:
    """A user's first order, placed and paid through the simulated provider: the order as payments then shows it."""
    body = {"user_id": user, "amount": amount, "currency": currency, "channel": "card"}
    placed = await client.post("/v1/orders", json=body)
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["order_id"]
    notice = paid_notice(order_id, amount=amount, currency=currency)
    paid = await client.post("/v1/psp/sim/callbacks", content=notice, headers=signed("sim-secret", notice))
    assert paid.status_code == 200 and paid.json()["result"] == "applied", paid.text
    order: dict[str, object] = (await client.get(f"/v1/orders/{order_id}")).json()
    return order


async def test_a_krw_and_a_cny_first_topup_are_each_judged_by_their_own_currencys_threshold(
    client: httpx.AsyncClient,
) -> None:
    """60,000 KRW is about 300 CNY: above the 50,000 minor units the platform meant for CNY, but far below its
    KRW threshold, so it is paid, not held; 60,000 fen (600 CNY) is held."""
    small_won = await first_topup(client, "u-krw-small", 60_000, "KRW")
    assert (small_won["status"], small_won["review_status"]) == ("paid", None), small_won
    large_won = await first_topup(client, "u-krw-large", KRW_ABOVE + 1, "KRW")
    assert (large_won["status"], large_won["review_status"]) == ("under_review", "held"), large_won
    yuan = await first_topup(client, "u-cny", 60_000, "CNY")
    assert (yuan["status"], yuan["review_status"]) == ("under_review", "held"), yuan
    small_yuan = await first_topup(client, "u-cny-small", CNY_ABOVE, "CNY")
    assert (small_yuan["status"], small_yuan["review_status"]) == ("paid", None), small_yuan


async def test_a_currency_with_no_threshold_of_its_own_keeps_the_single_number(client: httpx.AsyncClient) -> None:
    """JPY is not named per currency: the single PAYMENTS_REVIEW_FIRST_TOPUP_ABOVE_MINOR still applies to it, as it
    did before per-currency thresholds, so nothing that was reviewed is silently let through."""
    held = await first_topup(client, "u-jpy-large", CNY_ABOVE + 1, "JPY")
    assert (held["status"], held["review_status"]) == ("under_review", "held"), held
    paid = await first_topup(client, "u-jpy-small", CNY_ABOVE, "JPY")
    assert (paid["status"], paid["review_status"]) == ("paid", None), paid
