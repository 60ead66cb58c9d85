"""50 identical provider callbacks sent at once for one order give exactly one credit: payments and the ledger
on the real broker and PostgreSQL, the callbacks over payments' HTTP API."""

import asyncio
import contextlib
import json
import time

import httpx

from contracts.codec import decode
from contracts.events import CreditPosted
from contracts.topics import Topic
from ledger.bootstrap import build as build_ledger
from ledger.config import Settings as LedgerSettings
from payments.bootstrap import build as build_payments
from payments.config import Settings as PaymentsSettings
from servicekit.signatures import sign
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_all
from tests.service_settings import settings_for


async def test_fifty_identical_callbacks_at_once_give_exactly_one_credit(
    broker: Broker, database_url: str, isolation: str
) -> None:
    payments_infra, payments_app = await build_payments(
        settings_for(
            PaymentsSettings, broker, database_url, isolation, psp_secrets={"sim": ["s"]}, environment="development"
        )
    )
    ledger_settings = settings_for(LedgerSettings, broker, database_url, isolation)
    ledger_infra, _ = await build_ledger(ledger_settings)
    for consumer in ledger_infra.consumers:
        await consumer.start()
    tasks = [
        asyncio.create_task(payments_infra.relay.run()),
        asyncio.create_task(ledger_infra.relay.run()),
        *(asyncio.create_task(c.run()) for c in ledger_infra.consumers),
    ]
    try:
        transport = httpx.ASGITransport(app=payments_app)
        headers = await bearer(payments_infra.keys)
        async with httpx.AsyncClient(transport=transport, base_url="http://payments", headers=headers) as client:
            order = await client.post(
                "/v1/orders", json={"user_id": "u-fifty", "amount": 600, "currency": "CNY", "channel": "card"}
            )
            order_id = order.json()["order_id"]
            body = json.dumps(
                {
                    "order_id": order_id,
                    "provider_txn_id": "tx-fifty",
                    "status": "succeeded",
                    "amount": 600,
                    "currency": "CNY",
                    "paid_at": "2026-11-22T08:30:00+08:00",
                }
            ).encode()
            headers = {"X-Signature": sign("s", body, int(time.time()))}
            answers = await asyncio.gather(
                *(client.post("/v1/psp/sim/callbacks", content=body, headers=headers) for _ in range(50))
            )
        assert sorted(a.json()["result"] for a in answers) == ["applied"] + ["duplicate"] * 49

        async def credited() -> bool:
            return bool(await ledger_infra.pool.fetchval("SELECT count(*) FROM transactions") >= 1)

        await eventually(credited, timeout_s=60)
        await eventually(lambda: ledger_infra.pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout_s=30)
        await asyncio.sleep(1)  # room for a wrongly doubled credit to land
        credits = await ledger_infra.pool.fetch("SELECT order_id, kind FROM transactions")
        assert [(r["order_id"], r["kind"]) for r in credits] == [(order_id, "credit")]
        wallet = await ledger_infra.pool.fetchval(
            "SELECT balance FROM accounts WHERE account_id = 'wallet:u-fifty:CNY'"
        )
        assert wallet == 600
        announced = await read_all(broker.bootstrap, Topic.LEDGER_EVENTS.qualified(ledger_settings.topic_prefix))
        assert [type(decode(r.value, r.headers)[0]) for r in announced] == [CreditPosted]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for infra in (ledger_infra, payments_infra):
            with contextlib.suppress(Exception):
                await infra.close()
