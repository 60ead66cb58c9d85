"""payments run as two copies on one port (PAYMENTS_PROCESSES=2) while PostgreSQL goes away for a while, as in a
failover (the server stopped: every session cut, new ones refused), then comes back, under a steady trickle of
orders and provider callbacks: both copies stay up and become ready again, every order answered 2xx is published once
(OrderPlaced), and every callback answered 2xx is applied and published once (PaymentSucceeded); a callback answered
otherwise is sent again, as a provider does, and applies once all the same. What the outage refused was answered
503 and is counted so, with no server error and no traceback in the log. A PostgreSQL of the test's own (so it can
be stopped), the session's broker, payments as processes."""

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.topics import Topic
from credited.keys import create_development_key
from credited.stack.embedded import EmbeddedPostgres
from credited.stack.processes import Child, free_port, wait_for
from tests.conftest import Broker
from tests.kafka_reader import read_until
from tests.payments.sim_callbacks import paid_notice, signed
from tests.stoppable_broker import health, service_env

STARTUP_S = 120
AWAY_S = 20.0
"""How long PostgreSQL refuses the service: a failover's worth."""
SECRET = "copies-failover-psp-secret"
WORKING = "payments connected to PostgreSQL and the broker: working"


class Trickle:
    """Orders placed and paid one after another, each request sent again (the same Idempotency-Key, the same
    callback) until it is answered 2xx, as a client and a provider do."""

    def __init__(self, port: int, key: str, isolation: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.key, self.isolation = key, isolation
        self.placed: list[str] = []
        self.paid: list[str] = []
        self.refused: Counter[str] = Counter()
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection each time: both copies answer
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            n = 0
            while not self.stopping.is_set():
                n += 1
                order_id = await self._place(client, n)
                await self._pay(client, order_id)
                await asyncio.sleep(0.05)

    async def _place(self, client: httpx.AsyncClient, n: int) -> str:
        body = {"user_id": f"user-{self.isolation}-{n}", "amount": 600, "currency": "CNY", "channel": "alipay"}
        headers = {"Authorization": f"Bearer {self.key}", "Idempotency-Key": f"{self.isolation}-{n}"}
        while True:
            try:
                answer = await client.post(f"{self.base}/v1/orders", json=body, headers=headers)
            except httpx.HTTPError as exc:
                self.refused[f"order {type(exc).__name__}"] += 1
            else:
                if answer.status_code in (200, 201):
                    order_id = str(answer.json()["order_id"])
                    self.placed.append(order_id)
                    return order_id
                self.refused[f"order {answer.status_code}"] += 1
            await asyncio.sleep(0.2)

    async def _pay(self, client: httpx.AsyncClient, order_id: str) -> None:
        body = paid_notice(order_id)
        while True:
            try:
                answer = await client.post(
                    f"{self.base}/v1/psp/sim/callbacks", content=body, headers=signed(SECRET, body)
                )
            except httpx.HTTPError as exc:
                self.refused[f"callback {type(exc).__name__}"] += 1
            else:
                if 200 <= answer.status_code < 300:
                    self.paid.append(order_id)
                    return
                self.refused[f"callback {answer.status_code}"] += 1
            await asyncio.sleep(0.2)


def dependencies_ready(child: Child) -> dict[str, float]:
    """credited_dependency_ready by dependency, as Prometheus scrapes it (the lowest of the copies)."""
    text = httpx.get(f"http://127.0.0.1:{child.env['PAYMENTS_METRICS_PORT']}/metrics", timeout=5).text
    [family] = [f for f in text_string_to_metric_families(text) if f.name == "credited_dependency_ready"]
    return {sample.labels["dependency"]: sample.value for sample in family.samples}


def every_copy_ready(port: int, asks: int = 12) -> bool:
    """/healthz 200 from `asks` new connections in a row: the kernel spreads them over both copies."""
    return all((health(port) or (0, {}))[0] == 200 for _ in range(asks))


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_two_copies_of_payments_outlive_a_database_failover_losing_and_repeating_nothing(
    broker: Broker, own_database: EmbeddedPostgres, isolation: str, tmp_path: Path, children: list[Child]
) -> None:
    database_url = own_database.dsn
    prefix, schema = f"{isolation}.", f"{isolation}_payments"
    key = await create_development_key(database_url, tmp_path / "dev-keys.json", schema=f"{isolation}_identity")
    port = free_port()
    env = service_env(
        "payments", broker.bootstrap, broker.kind, database_url, isolation, http_port=str(port), processes="2"
    )
    env |= {"PAYMENTS_PSP_SECRET_SIM": SECRET}
    log_path = tmp_path / "payments.log"
    child = Child("payments", [sys.executable, "-m", "payments"], log_path=log_path, env=env)
    child.start()
    children.append(child)
    both = lambda: log_path.read_text().count(WORKING) == 2  # noqa: E731
    await asyncio.to_thread(wait_for, both, timeout_s=STARTUP_S, what="both copies working", child=child)
    await asyncio.to_thread(wait_for, lambda: every_copy_ready(port), timeout_s=STARTUP_S, what="ready", child=child)

    trickle = Trickle(port, key, isolation)
    away_answers: Counter[int] = Counter()
    trickling = asyncio.create_task(trickle.run())
    try:
        await asyncio.sleep(3)
        await asyncio.to_thread(own_database.stop)
        until = time.monotonic() + AWAY_S
        while time.monotonic() < until:
            answer = await asyncio.to_thread(health, port)
            away_answers[answer[0] if answer else 0] += 1
            await asyncio.sleep(0.5)
        await asyncio.to_thread(own_database.start)
        back = time.monotonic()
        ready = lambda: every_copy_ready(port)  # noqa: E731
        await asyncio.to_thread(wait_for, ready, timeout_s=90, what="both copies ready again", child=child)
        recovered_s = time.monotonic() - back
        placed_before = len(trickle.paid)
        await asyncio.sleep(5)
        assert len(trickle.paid) > placed_before, f"no callback answered 2xx after the failover:\n{child.tail(80)}"
    finally:
        trickle.stopping.set()
        await asyncio.wait_for(trickling, timeout=120)
    assert child.alive(), f"payments stopped:\n{child.tail(80)}"

    async def in_db() -> dict[str, str]:
        conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
        try:
            rows = await conn.fetch("SELECT order_id, payment_status FROM orders")
        finally:
            await conn.close()
        return {r["order_id"]: str(r["payment_status"]) for r in rows}

    statuses = await in_db()
    assert [o for o in trickle.paid if statuses.get(o) != "succeeded"] == [], statuses

    wanted = set(trickle.placed)

    def complete(records: list) -> bool:  # type: ignore[type-arg]
        seen = {(r.key.decode(), dict(r.headers)["event_type"]) for r in records}
        return all((o, b"OrderPlaced") in seen and (o, b"PaymentSucceeded") in seen for o in wanted)

    published = await read_until(broker.bootstrap, Topic.PAYMENTS_EVENTS.qualified(prefix), complete, timeout_s=60)
    counts = Counter((r.key.decode(), dict(r.headers)["event_type"]) for r in published)
    values: dict[tuple[str, bytes], set[bytes]] = {}
    for r in published:
        values.setdefault((r.key.decode(), dict(r.headers)["event_type"]), set()).add(r.value)
    missing = [(o, t) for o in wanted for t in (b"OrderPlaced", b"PaymentSucceeded") if counts[(o, t)] == 0]
    different = {k: len(v) for k, v in values.items() if len(v) > 1}
    summary = (
        f"{len(wanted)} orders, refusals {dict(trickle.refused)}, /healthz while away {dict(away_answers)},"
        f" ready again after {recovered_s:.1f}s"
    )
    assert missing == [], f"{summary}; never published: {missing[:10]}"
    assert different == {}, f"{summary}; published with different content: {different}"
    assert trickle.refused, "the failover refused nothing: the test did not make PostgreSQL go away"
    assert away_answers[503] > 0, f"/healthz never said the database was away: {dict(away_answers)}"
    assert every_copy_ready(port)
    assert dependencies_ready(child) == {"database": 1, "broker": 1}
    assert http_answers(child, "500") == 0, f"{summary}; counted as server errors: {http_answers(child, '500')}"
    refused_503 = sum(n for what, n in trickle.refused.items() if what.endswith(" 503"))
    assert refused_503 > 0 and http_answers(child, "503") >= refused_503, summary
    assert "Exception in ASGI application" not in log_path.read_text()


def http_answers(child: Child, code: str) -> float:
    """How many order and callback requests payments counted with `code` (credited_http_requests_total)."""
    text = httpx.get(f"http://127.0.0.1:{child.env['PAYMENTS_METRICS_PORT']}/metrics", timeout=5).text
    [family] = [f for f in text_string_to_metric_families(text) if f.name == "credited_http_requests"]
    counted = [s for s in family.samples if s.name == "credited_http_requests_total" and s.labels["code"] == code]
    return sum(s.value for s in counted if s.labels["route"].startswith("/v1/"))
