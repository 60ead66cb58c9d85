"""SIGTERM to payments run as two copies on one port (PAYMENTS_PROCESSES=2) with a stop grace longer than the
default (CREDITED_STOP_GRACE_S=30) while an order request is in flight (held up by a lock on its orders table for
longer than the default grace): the supervisor of the copies lets them use the grace they were given, so the request
is answered 201, its OrderPlaced is published, and payments exits 0. Real PostgreSQL, the session's broker, payments
as processes."""

import asyncio
import sys
from pathlib import Path

import pytest

from credited.keys import create_development_key
from credited.stack.processes import Child, free_port, wait_for
from servicekit.runner import CLOSE_S
from tests.conftest import Broker
from tests.payments.integration.stopping import order_held_through_a_stop, published_events
from tests.stoppable_broker import health, service_env

STARTUP_S = 120
GRACE_S = 30.0
HELD_S = 22.0
"""How long the order stays held up after the signal: longer than the default grace and its closing time, well within
GRACE_S."""
WORKING = "payments connected to PostgreSQL and the broker: working"


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_a_supervisor_of_copies_lets_them_finish_a_request_within_a_stop_grace_longer_than_the_default(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path, children: list[Child]
) -> None:
    prefix, schema = f"{isolation}.", f"{isolation}_payments"
    key = await create_development_key(database_url, tmp_path / "dev-keys.json", schema=f"{isolation}_identity")
    port = free_port()
    env = service_env(
        "payments", broker.bootstrap, broker.kind, database_url, isolation, http_port=str(port), processes="2"
    )
    env |= {"CREDITED_STOP_GRACE_S": str(GRACE_S), "PAYMENTS_PSP_SECRET_SIM": "copies-grace-psp-secret"}
    child = Child("payments", [sys.executable, "-m", "payments"], log_path=tmp_path / "payments.log", env=env)
    child.start()
    children.append(child)
    await asyncio.to_thread(
        wait_for, lambda: (health(port) or (0, {}))[0] == 200, timeout_s=STARTUP_S, what="payments ready", child=child
    )
    # /healthz answers from whichever copy the kernel picks: each copy says in its log when it works.
    both = lambda: (tmp_path / "payments.log").read_text().count(WORKING) == 2  # noqa: E731
    await asyncio.to_thread(wait_for, both, timeout_s=STARTUP_S, what="both copies working", child=child)

    stopped = await order_held_through_a_stop(
        child, database_url, schema, key, port, held_s=HELD_S, exit_within_s=GRACE_S + 2 * CLOSE_S
    )

    assert stopped.answer.status_code == 201, stopped.answer.text
    assert child.exit_code() == 0, child.tail(60)
    assert stopped.took_s < GRACE_S + 2 * CLOSE_S
    order_id = stopped.answer.json()["order_id"]
    assert await published_events(broker, prefix, order_id) == [b"OrderPlaced"]
