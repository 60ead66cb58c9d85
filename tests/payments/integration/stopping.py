"""An order request held up by a lock on payments' orders table while payments is told to stop (SIGTERM), and what
it published: shared by the tests of payments' graceful stop, as one process and as copies."""

import asyncio
import os
import signal
import time
from dataclasses import dataclass

import asyncpg
import httpx

from contracts.topics import Topic
from credited.stack.processes import Child, wait_for
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_until


@dataclass(frozen=True)
class Stopped:
    answer: httpx.Response
    took_s: float
    """From the signal to the process's exit."""
    outbox_left: int
    """Rows still in the outbox after the exit: what only the next start would publish."""


async def order_held_through_a_stop(
    child: Child, database_url: str, schema: str, key: str, port: int, *, held_s: float, exit_within_s: float
) -> Stopped:
    """Place an order while its table is locked, send SIGTERM to `child` once the order waits for the lock, keep the
    lock `held_s` more, then let it go: the answer, how long the exit took (at most `exit_within_s`) and the outbox."""
    lock = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    order = {"user_id": f"user-{schema}", "amount": 600, "currency": "CNY", "channel": "alipay"}
    try:
        async with httpx.AsyncClient(timeout=held_s + 60, headers={"Authorization": f"Bearer {key}"}) as client:
            holding = lock.transaction()
            await holding.start()
            await lock.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            asked = asyncio.create_task(client.post(f"http://127.0.0.1:{port}/v1/orders", json=order))

            async def waiting() -> bool:
                return int(await lock.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted")) >= 1

            await eventually(waiting, timeout_s=30)
            signalled = time.monotonic()
            os.kill(child.pid, signal.SIGTERM)  # a supervisor of copies passes it on to each
            await asyncio.sleep(held_s)  # the order request is held up while the rest of payments stops
            await holding.rollback()
            try:
                answer = await asked
            except httpx.HTTPError as exc:
                raise AssertionError(f"the order in flight got no answer ({exc!r}):\n{child.tail(60)}") from None
            await asyncio.to_thread(wait_for, lambda: not child.alive(), timeout_s=exit_within_s, what="exit")
            took = time.monotonic() - signalled
        left = int(await lock.fetchval("SELECT count(*) FROM outbox"))
    finally:
        await lock.close()
    return Stopped(answer, took, left)


async def published_events(broker: Broker, prefix: str, order_id: str) -> list[bytes]:
    """The event types payments published for `order_id`, once one is there."""
    published = await read_until(
        broker.bootstrap,
        Topic.PAYMENTS_EVENTS.qualified(prefix),
        lambda records: any(r.key == order_id.encode() for r in records),
        timeout_s=30,
    )
    return [dict(r.headers)["event_type"] for r in published if r.key == order_id.encode()]
