"""SIGTERM to payments while an order request is in flight (held up by a lock on its orders table): the request is
answered 201 and what it wrote to the outbox is published before payments exits 0 within its grace, not left for the
next start. Real PostgreSQL, the session's broker, payments as a process."""

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import asyncpg
import httpx

from contracts.topics import Topic
from credited.keys import create_development_key
from credited.stack.processes import Child, free_port, wait_for
from servicekit.runner import CLOSE_S
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_until
from tests.stoppable_broker import health, service_env

STARTUP_S = 120
GRACE_S = 10.0
HELD_S = 3.0
"""How long the order stays held up after the signal: past the consumers' last polls and the stop's outbox drain."""


async def test_an_order_answered_while_payments_stops_is_published_before_it_exits(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path, children: list[Child]
) -> None:
    prefix, schema = f"{isolation}.", f"{isolation}_payments"
    key = await create_development_key(database_url, tmp_path / "dev-keys.json", schema=f"{isolation}_identity")
    port = free_port()
    env = service_env("payments", broker.bootstrap, broker.kind, database_url, isolation, http_port=str(port))
    env |= {"CREDITED_STOP_GRACE_S": str(GRACE_S), "PAYMENTS_PSP_SECRET_SIM": "graceful-stop-psp-secret"}
    child = Child("payments", [sys.executable, "-m", "payments"], log_path=tmp_path / "payments.log", env=env)
    child.start()
    children.append(child)
    await asyncio.to_thread(
        wait_for, lambda: (health(port) or (0, {}))[0] == 200, timeout_s=STARTUP_S, what="payments ready", child=child
    )

    lock = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    order = {"user_id": f"user-{isolation}", "amount": 600, "currency": "CNY", "channel": "alipay"}
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
        holding = lock.transaction()
        await holding.start()
        await lock.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        asked = asyncio.create_task(client.post(f"http://127.0.0.1:{port}/v1/orders", json=order))

        async def waiting() -> bool:
            return int(await lock.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted")) >= 1

        await eventually(waiting, timeout_s=30)
        signalled = time.monotonic()
        os.kill(child.pid, signal.SIGTERM)
        await asyncio.sleep(HELD_S)  # the order request is held up while the rest of payments stops
        await holding.rollback()
        answer = await asked
        await asyncio.to_thread(wait_for, lambda: not child.alive(), timeout_s=GRACE_S + CLOSE_S, what="exit")
        took = time.monotonic() - signalled
    try:
        left = int(await lock.fetchval("SELECT count(*) FROM outbox"))
    finally:
        await lock.close()

    assert answer.status_code == 201, answer.text
    assert child.exit_code() == 0, child.tail()
    assert took < GRACE_S + CLOSE_S
    assert left == 0, "the order's OrderPlaced stayed in the outbox for the next start:\n" + child.tail()
    order_id = answer.json()["order_id"]
    published = await read_until(
        broker.bootstrap,
        Topic.PAYMENTS_EVENTS.qualified(prefix),
        lambda records: any(r.key == order_id.encode() for r in records),
        timeout_s=30,
    )
    assert [dict(r.headers)["event_type"] for r in published if r.key == order_id.encode()] == [b"OrderPlaced"]
