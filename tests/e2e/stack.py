"""The whole stack for end-to-end tests: the four services as processes on the test's broker and database.

The joined topics are made first, with the broker's own clock as each record's timestamp (LogAppendTime): a
test judges a flag against the moment a credit reached the broker, and a producer's clock (CreateTime) is
earlier by its linger and the request's way, so a credit created just before its deadline but appended after
it would count as visible in time (a false alarm that is none)."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from contracts.topics import Topic
from credited.stack.local import (
    LEDGER_PAYMENTS_CONSUMERS,
    PAYMENTS_PROCESSES,
    RECONCILER_WORKERS,
    SERVICES,
    SHAPE,
    LocalStack,
    StackConfig,
)
from credited.stack.processes import free_port
from harness.simulator.receiver import WebhookReceiver
from servicekit.identity import PostgresKeyStore, Scope
from servicekit.signatures import sign
from tests.conftest import Broker

DEPLOYED_SHAPE: dict[str, object] = {
    "payments_processes": PAYMENTS_PROCESSES,
    "reconciler_workers": RECONCILER_WORKERS,
    "ledger_payments_consumers": LEDGER_PAYMENTS_CONSUMERS,
}
"""The copies per service that compose runs."""
ONE_OF_EACH: dict[str, object] = dict.fromkeys(SHAPE, 1)
"""What `running_stack` starts unless a test asks for DEPLOYED_SHAPE: a test about an order's path, not about copies
sharing work, needs no supervisor, second payments copy or second reconciler worker, and starting and idling
those three took a quarter of such a test's CPU on CI's two cores. (`credited up` runs two reconciler workers.)"""

DRIVER_LIMITS = httpx.Limits(max_connections=16, max_keepalive_connections=16)
"""The connections a test's simulator places orders and sends callbacks through. httpx keeps only 20 of a larger
pool alive (the rest reconnect for every request), and it scans the whole pool for each queued request: with 100
connections the thousand-order journey spent 67 s placing its orders, most of a core in the test's own process;
with these 16, 43 s, and the test's CPU fell from 164 to 121 core-s. The stack, not the pool, is what they test."""


@asynccontextmanager
async def running_stack(
    broker: Broker, database_url: str, isolation: str, run_dir: Path, **config: object
) -> AsyncIterator[tuple[LocalStack, WebhookReceiver]]:
    receiver = WebhookReceiver(free_port(), "e2e-webhook-secret")
    await receiver.start()
    stack = LocalStack(
        StackConfig(
            run_dir=run_dir,
            kafka_bootstrap=broker.bootstrap,
            kafka_broker="tansu" if broker.kind == "embedded" else "apache",
            database_url=database_url,
            ports={name: free_port() for name in SERVICES},
            topic_prefix=f"{isolation}.",
            db_schema_prefix=f"{isolation}_",
            webhook_url=receiver.url,
            webhook_secret=receiver.secret,
            psp_secret="e2e-psp-secret",
            **{**ONE_OF_EACH, **config},  # type: ignore[arg-type]
        )
    )
    try:
        await joined_topics_on_broker_time(broker.bootstrap, f"{isolation}.", stack.config.partitions)
        await asyncio.to_thread(stack.start)
        yield stack, receiver
    finally:
        await asyncio.to_thread(stack.stop)
        await receiver.stop()


async def joined_topics_on_broker_time(bootstrap: str, prefix: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"message.timestamp.type": "LogAppendTime"}
        topics = [Topic.PAYMENTS_EVENTS.qualified(prefix), Topic.LEDGER_EVENTS.qualified(prefix)]
        await admin.create_topics([NewTopic(t, partitions, 1, topic_configs=config) for t in topics])
    finally:
        await admin.close()


async def paid_order(
    client: httpx.AsyncClient, stack: LocalStack, user_id: str, amount: int, paid_at: str | None = None
) -> str:
    """Place an order for `user_id` and have the simulated provider confirm its payment (a signed callback);
    `paid_at` defaults to now."""
    payments = stack.url("payments")
    placed = await client.post(
        f"{payments}/v1/orders", json={"user_id": user_id, "amount": amount, "currency": "CNY", "channel": "alipay"}
    )
    assert placed.status_code == 201, placed.text
    order_id = str(placed.json()["order_id"])
    body = json.dumps(
        {
            "order_id": order_id,
            "provider_txn_id": f"tx-{order_id}",
            "status": "succeeded",
            "amount": amount,
            "currency": "CNY",
            "paid_at": paid_at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    ).encode()
    signature = sign(stack.config.psp_secret, body, int(time.time()))
    paid = await client.post(f"{payments}/v1/psp/sim/callbacks", content=body, headers={"X-Signature": signature})
    assert paid.status_code == 200, paid.text
    return order_id


async def agent_key(stack: LocalStack, name: str, scopes: set[Scope]) -> dict[str, str]:
    """The Authorization header of a new key named `name` with `scopes` in the stack's key store (a support agent's,
    say), so what it does is recorded under that name."""
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        _, key = await PostgresKeyStore(pool, stack.config.identity_schema).create(name, scopes)
    finally:
        await pool.close()
    return {"Authorization": f"Bearer {key}"}
