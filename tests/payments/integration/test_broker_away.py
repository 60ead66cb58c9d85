"""With the broker stopped, payments keeps answering: orders are placed and provider callbacks accepted (the
outbox holds what they announce), /healthz says the broker is away, and once the broker is back every
announcement is published, each once. Real PostgreSQL, a broker of the session's kind that the test stops,
payments as a process."""

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from contracts.codec import decode
from contracts.events import OrderPlaced, PaymentSucceeded
from contracts.topics import Topic
from credited.keys import create_development_key
from credited.stack.processes import Child, free_port, wait_for
from servicekit.kafka import ensure_topics
from tests.kafka_reader import read_until
from tests.payments.sim_callbacks import paid_notice, signed
from tests.stoppable_broker import StoppableBroker, health, service_env

STARTUP_S = 120  # deadlines, not sleeps: a JVM broker and these processes share two loaded cores
SECRET = "broker-away-secret"


@pytest.fixture
def payments(own_broker: StoppableBroker, database_url: str, isolation: str, tmp_path: Path) -> Iterator[Child]:
    env = service_env(
        "payments", own_broker.bootstrap, own_broker.kind, database_url, isolation,
        http_port=str(free_port()), psp_secret_sim=SECRET, processes="1",
    )  # fmt: skip
    child = Child("payments", [sys.executable, "-m", "payments"], log_path=tmp_path / "payments.log", env=env)
    child.start()
    yield child
    child.stop()


def url(child: Child, path: str) -> str:
    return f"http://127.0.0.1:{child.env['PAYMENTS_HTTP_PORT']}{path}"


def place(child: Child, user_id: str, key: str) -> str:
    body = {"user_id": user_id, "amount": 600, "currency": "CNY", "channel": "alipay"}
    answer = httpx.post(url(child, "/v1/orders"), json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code in (200, 201), answer.text
    return str(answer.json()["order_id"])


def pay(child: Child, order_id: str) -> httpx.Response:
    body = paid_notice(order_id, paid_at="2026-11-22T08:30:00+08:00")
    return httpx.post(url(child, "/v1/psp/sim/callbacks"), content=body, headers=signed(SECRET, body), timeout=10)


def broker_away(child: Child) -> bool:
    answer = health(int(child.env["PAYMENTS_HTTP_PORT"]))
    if answer is None or answer[0] != 503:
        return False
    dependencies = answer[1]["dependencies"]
    assert isinstance(dependencies, dict)
    return bool(dependencies["database"]["ready"]) and not dependencies["broker"]["ready"]


@pytest.mark.long
async def test_payments_takes_orders_and_callbacks_with_the_broker_stopped_and_publishes_each_once_it_is_back(
    own_broker: StoppableBroker, payments: Child, isolation: str, database_url: str, tmp_path: Path
) -> None:
    prefix = f"{isolation}."
    await asyncio.to_thread(own_broker.start)
    await ensure_topics(own_broker.bootstrap, [t.qualified(prefix) for t in Topic], 1)
    ready = lambda: (health(int(payments.env["PAYMENTS_HTTP_PORT"])) or (0, {}))[0] == 200  # noqa: E731
    await asyncio.to_thread(wait_for, ready, timeout_s=STARTUP_S, what="payments ready", child=payments)
    key = await create_development_key(database_url, tmp_path / "dev-keys.json", schema=f"{isolation}_identity")
    before = await asyncio.to_thread(place, payments, "u-before", key)

    await asyncio.to_thread(own_broker.stop)
    # Callbacks for the order placed before, and an order placed and paid while the broker is away.
    first = await asyncio.to_thread(pay, payments, before)
    assert first.status_code == 200, first.text
    during = await asyncio.to_thread(place, payments, "u-during", key)
    second = await asyncio.to_thread(pay, payments, during)
    assert second.status_code == 200, second.text
    again = await asyncio.to_thread(pay, payments, during)  # the provider sends it again: still one payment
    assert again.status_code == 200, again.text
    away = lambda: broker_away(payments)  # noqa: E731
    await asyncio.to_thread(wait_for, away, timeout_s=STARTUP_S, what="503 naming the broker", child=payments)
    assert payments.alive(), payments.tail()

    await asyncio.to_thread(own_broker.start)
    await asyncio.to_thread(wait_for, ready, timeout_s=STARTUP_S, what="payments ready again", child=payments)
    topic = Topic.PAYMENTS_EVENTS.qualified(prefix)

    def both_paid(records: list) -> bool:  # type: ignore[type-arg]
        return sum(isinstance(decode(r.value, r.headers)[0], PaymentSucceeded) for r in records) >= 2

    records = await read_until(own_broker.bootstrap, topic, both_paid, timeout_s=STARTUP_S)
    await asyncio.sleep(3)  # anything published twice would arrive within this
    records = await read_until(own_broker.bootstrap, topic, both_paid, timeout_s=STARTUP_S)
    messages = [decode(r.value, r.headers)[0] for r in records]
    paid = sorted(m.order_id for m in messages if isinstance(m, PaymentSucceeded))
    placed = sorted(m.order_id for m in messages if isinstance(m, OrderPlaced))
    assert paid == sorted([before, during]), paid
    assert placed == sorted([before, during]), placed
    assert payments.alive() and payments.exit_code() is None, payments.tail()
