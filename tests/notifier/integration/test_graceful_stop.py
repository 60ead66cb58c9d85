"""SIGTERM to a notifier while a webhook delivery is on its way: the graceful stop lets the delivery finish and writes
its outcome (the grace period is 10 s, the receiver answers in 2), so the next notifier does not send it again.
Real PostgreSQL, the session's broker, the notifier as a process."""

import asyncio
import os
import signal
import sys
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from contracts.events import OrderStatus
from credited.stack.processes import Child, free_port, wait_for
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.loopback_http import serving
from tests.notifier.harness import change, publish
from tests.stoppable_broker import health

STARTUP_S = 120
ANSWER_AFTER_S = 2.0


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_sigterm_during_a_webhook_delivery_finishes_it_and_the_next_notifier_does_not_send_it_again(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path, children: list[Child]
) -> None:
    """The delivery worker is a finishing task of the service (servicekit.infrastructure.Finishing): once the
    consumers committed their last poll it claims nothing more, lets the webhook POST in flight end and writes its
    outcome before the service exits, so a deploy or a restart within the grace repeats nothing."""
    received: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(request.headers["x-credited-notification-id"])
        await asyncio.sleep(ANSWER_AFTER_S)  # the platform backend takes its time, well inside the timeout
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    prefix, schema = f"{isolation}.", f"{isolation}_notifier"
    async with serving(app) as hook_port:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CREDITED_", "NOTIFIER_"))}

        def start(n: int) -> tuple[Child, int]:
            port = free_port()
            env = {
                **inherited,
                "CREDITED_ENV": "development",
                "KAFKA_BOOTSTRAP": broker.bootstrap,
                "KAFKA_BROKER": "apache" if broker.idempotence else "tansu",
                "DATABASE_URL": database_url,
                "CREDITED_TOPIC_PREFIX": prefix,
                "CREDITED_TOPIC_PARTITIONS": "1",
                "CREDITED_STOP_GRACE_S": "10",
                "CREDITED_IDENTITY_SCHEMA": f"{isolation}_identity",
                "NOTIFIER_HTTP_PORT": str(port),
                "NOTIFIER_METRICS_PORT": str(free_port()),
                "NOTIFIER_DB_SCHEMA": schema,
                "NOTIFIER_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hook",
                "NOTIFIER_WEBHOOK_SECRET": "hook-secret",
                "NOTIFIER_WEBHOOK_TIMEOUT_S": "3",
                "NOTIFIER_PUSH_TIMEOUT_S": "1",  # lease: 2 * 3 + 5 = 11 s
            }
            child = Child(f"notifier{n}", [sys.executable, "-m", "notifier"], log_path=tmp_path / f"n{n}.log", env=env)
            child.start()
            children.append(child)
            wait_for(
                lambda: (health(port) or (0, {}))[0] == 200, timeout_s=STARTUP_S, what="notifier ready", child=child
            )
            return child, port

        first, _ = await asyncio.to_thread(start, 1)
        order = f"ord_{isolation}"
        await publish(broker, prefix, change(order, OrderStatus.CREDITED, 1))

        async def posted() -> bool:
            return len(received) >= 1

        await eventually(posted, timeout_s=60)
        os.kill(first.pid, signal.SIGTERM)  # the delivery is in flight: the receiver answers in 2 s
        await asyncio.to_thread(wait_for, lambda: not first.alive(), timeout_s=20, what="first notifier exits")

        db = await asyncpg.connect(database_url, server_settings={"search_path": schema})
        try:
            states = [r["state"] for r in await db.fetch("SELECT state FROM deliveries WHERE order_id = $1", order)]
        finally:
            await db.close()

        await asyncio.to_thread(start, 2)
        await asyncio.sleep(11 + 6)  # the lease of the first notifier's claim runs out, and a poll or two

    log = (tmp_path / "n1.log").read_text()
    assert len(received) == 1, (
        f"the webhook got notification {received[0]} {len(received)} times; after the graceful stop its delivery"
        f" was {states}; first notifier's log:\n" + "\n".join(log.splitlines()[-15:])
    )
    assert states == ["delivered"], "the first notifier wrote the outcome before it exited"
