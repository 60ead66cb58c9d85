"""SIGTERM to payments while an order request is in flight (held up by a lock on its orders table): the request is
answered 201 and what it wrote to the outbox is published before payments exits 0 within its grace, not left for the
next start. Real PostgreSQL, the session's broker, payments as a process."""

import asyncio
import sys
from pathlib import Path

from credited.keys import create_development_key
from credited.stack.processes import Child, free_port, wait_for
from servicekit.runner import CLOSE_S
from tests.conftest import Broker
from tests.payments.integration.stopping import order_held_through_a_stop, published_events
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

    stopped = await order_held_through_a_stop(
        child, database_url, schema, key, port, held_s=HELD_S, exit_within_s=GRACE_S + CLOSE_S
    )

    assert stopped.answer.status_code == 201, stopped.answer.text
    assert child.exit_code() == 0, child.tail()
    assert stopped.took_s < GRACE_S + CLOSE_S
    assert stopped.outbox_left == 0, "the order's OrderPlaced stayed in the outbox for the next start:\n" + child.tail()
    order_id = stopped.answer.json()["order_id"]
    assert await published_events(broker, prefix, order_id) == [b"OrderPlaced"]
