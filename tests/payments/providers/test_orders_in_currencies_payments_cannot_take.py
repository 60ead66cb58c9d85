"""Orders in a currency credited cannot handle: a code that is no ISO 4217 currency, and a currency the channel's
provider does not settle. Payments on the real PostgreSQL and broker, as the local provider's merchant."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from credited.providers.faults import Faults
from credited.providers.keys import LocalKeys
from credited.providers.notifier import NotifyKnobs
from credited.providers.server import LocalProvider
from credited.stack.processes import free_port
from payments.bootstrap import build as build_payments
from payments.config import Settings as PaymentsSettings
from payments.queries import QueryWorker
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.service_settings import settings_for


@pytest.fixture(scope="module")
def keys() -> LocalKeys:
    return LocalKeys.generate()


@pytest.fixture
async def provider(keys: LocalKeys) -> AsyncIterator[LocalProvider]:
    """The local provider, dropping every notification: payments learns of payments by asking."""
    server = LocalProvider(free_port(), keys=keys, faults=Faults(hang_s=1.0), knobs=NotifyKnobs(drop_share=1.0))
    await server.start()
    try:
        yield server
    finally:
        await asyncio.wait_for(server.stop(), 10)


@pytest.fixture
async def payments(
    broker: Broker, database_url: str, isolation: str, provider: LocalProvider
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    env = {k.removeprefix("PAYMENTS_").lower(): v for k, v in provider.keys.payments_env(provider.url).items()}
    options: dict[str, Any] = {
        **env,
        "provider_timeout_s": 2,
        "query_delay_s": 0.3,
        "query_max_interval_s": 0.5,
        "query_idle_s": 0.05,
        "payment_expiry_s": 60,
    }
    infra, app = await build_payments(settings_for(PaymentsSettings, broker, database_url, isolation, **options))
    worker: QueryWorker = app.state.query_worker
    tasks = [asyncio.create_task(infra.relay.run()), asyncio.create_task(worker.run())]
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payments")
    client.headers.update(await bearer(infra.keys))
    try:
        yield infra, client
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
        with contextlib.suppress(Exception):
            await infra.close()


@pytest.mark.parametrize("code", ["ABC", "XXX", "XTS"])
async def test_an_order_in_a_code_that_is_no_iso_4217_currency_is_refused(code: str, payments) -> None:  # type: ignore[no-untyped-def]
    """POST /v1/orders takes any three upper-case letters as the currency: "ABC" (no currency at all), "XXX"
    (ISO's "no currency") and "XTS" (ISO's code for tests) are placed (201), announced to the ledger (whose contract
    takes the same pattern, so a payment would credit an "ABC" wallet) and shown to the user with two decimals the
    code never had (Babel's default precision for a code it does not know). The contract
    says `currency` is an ISO 4217 code and amounts are minor units by its exponent: a code with no exponent has no
    amount, and the caller should hear 422 at once, not a 201 and a wallet nobody can spend."""
    _, client = payments
    answer = await client.post("/v1/orders", json={"user_id": "u1", "amount": 600, "currency": code, "channel": "card"})
    assert answer.status_code == 422, f"{code}: {answer.status_code} {answer.text[:200]}"


async def test_a_yen_order_on_the_alipay_channel_is_refused_at_placement_not_left_unpayable(payments, provider) -> None:  # type: ignore[no-untyped-def]
    """Alipay (and WeChat Pay as a direct merchant) settle these trades in CNY only: the Alipay adapter reads every
    amount as yuan and stamps it CNY. Payments still places a 600 JPY order on the `alipay` channel (201, a status
    link, a payment query). When the user pays it, every callback and every query answer says "600 CNY", which
    never matches "600 JPY": each is refused as amount_mismatch, the query schedule is finished, and the order sits
    `submitted` for ever: the user's money was taken, nothing is credited, refunded or expired, and the reconciler
    never hears of it (no PaymentSucceeded). A currency the channel's provider cannot settle should be 422."""
    infra, client = payments
    body = {"user_id": "u-jpy", "amount": 600, "currency": "JPY", "channel": "alipay"}
    placed = await client.post("/v1/orders", json=body)
    if placed.status_code != 201:
        assert 400 <= placed.status_code < 500, placed.text
        return
    order_id = placed.json()["order_id"]
    provider.pay("alipay", order_id, 600)  # the user pays the trade the platform opened for the order
    pool = infra.pool

    async def settled() -> bool:
        return bool(await pool.fetchval("SELECT count(*) = 0 FROM payment_queries WHERE order_id = $1", order_id))

    await eventually(settled, timeout_s=30)
    view = (await client.get(f"/v1/orders/{order_id}")).json()
    audit = await pool.fetch("SELECT outcome, reason FROM callbacks WHERE order_id = $1 ORDER BY id", order_id)
    assert placed.status_code == 422, (
        f"a JPY order on alipay was placed ({placed.status_code}); paid at Alipay, it ends "
        f"status={view['status']} payment_status={view['payment_status']}, off the query schedule; "
        f"its answers were recorded as {[dict(r) for r in audit]}"
    )
