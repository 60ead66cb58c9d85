"""The notifier while PostgreSQL goes away for a while, as in a failover (the server stopped: every session cut, new
ones refused), and comes back: the process stays up and is ready again; what the outage refused was answered 503,
never 500; a status change consumed during the outage is notified once; and the status pages stay live: a change
consumed after the failover reaches a stream opened before it and one opened after it at once, through the feed's
LISTEN connection, not at the next heartbeat. A PostgreSQL of the test's own (so it can be stopped), the session's
broker, the notifier as a process, a webhook receiver that counts what reaches it."""

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.events import OrderStatus
from credited.keys import create_development_key
from credited.stack.embedded import EmbeddedPostgres
from credited.stack.processes import Child, free_port, wait_for
from harness.simulator.receiver import WebhookReceiver
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.harness import change, publish, timelines
from tests.stoppable_broker import health, service_env

STARTUP_S = 120
AWAY_S = 20.0
"""How long PostgreSQL refuses the notifier: a failover's worth."""
HEARTBEAT_S = 15.0
"""The streams' heartbeat (the default): an open stream reads its order again at least once while PostgreSQL is
away."""
LIVE_S = 5.0
"""How soon a consumed change must reach an open stream: the feed's NOTIFY brings it, not the next heartbeat."""
WORKING = "notifier connected to PostgreSQL and the broker: working"


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(free_port(), "failover-hook-secret")
    await receiver.start()
    yield receiver
    await receiver.stop()


class Stream:
    """An open status page's live stream: the sequence of each `timeline` event and when it came."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.seen: list[tuple[int, float]] = []
        self.ended: str | None = None
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        try:
            async with (
                httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as browser,
                browser.stream("GET", self.url, headers=headers) as answer,
            ):
                if answer.status_code != 200:
                    self.ended = f"answered {answer.status_code}"
                    return
                async for timeline in timelines(answer):
                    self.seen.append((int(timeline["sequence"]), time.monotonic()))
            self.ended = "ended by the server"
        except httpx.HTTPError as exc:
            self.ended = repr(exc)

    def has(self, sequence: int) -> bool:
        return any(s >= sequence for s, _ in self.seen)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def metric(child: Child, family: str) -> list[Any]:
    text = httpx.get(f"http://127.0.0.1:{child.env['NOTIFIER_METRICS_PORT']}/metrics", timeout=5).text
    [found] = [f for f in text_string_to_metric_families(text) if f.name == family]
    return list(found.samples)


def api_answers(child: Child, code: str) -> float:
    counted = [s for s in metric(child, "credited_http_requests") if s.name == "credited_http_requests_total"]
    return sum(s.value for s in counted if s.labels["code"] == code and s.labels["route"].startswith("/v1/"))


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_the_notifier_outlives_a_database_failover_and_its_status_pages_stay_live(
    broker: Broker,
    own_database: EmbeddedPostgres,
    webhook: WebhookReceiver,
    isolation: str,
    tmp_path: Path,
    children: list[Child],
) -> None:
    database_url, prefix = own_database.dsn, f"{isolation}."
    key = await create_development_key(database_url, tmp_path / "dev-keys.json", schema=f"{isolation}_identity")
    port = free_port()
    env = service_env("notifier", broker.bootstrap, broker.kind, database_url, isolation, http_port=str(port))
    env |= {
        "NOTIFIER_WEBHOOK_URL": webhook.url,
        "NOTIFIER_WEBHOOK_SECRET": webhook.secret,
        "NOTIFIER_SSE_HEARTBEAT_S": str(HEARTBEAT_S),
        "NOTIFIER_BASE_BACKOFF_S": "0.2",
        "NOTIFIER_MAX_BACKOFF_S": "2",
    }
    log_path = tmp_path / "notifier.log"
    child = Child("notifier", [sys.executable, "-m", "notifier"], log_path=log_path, env=env)
    child.start()
    children.append(child)
    working = lambda: WORKING in log_path.read_text()  # noqa: E731
    await asyncio.to_thread(wait_for, working, timeout_s=STARTUP_S, what="notifier working", child=child)
    ready = lambda: (health(port) or (0, {}))[0] == 200  # noqa: E731
    await asyncio.to_thread(wait_for, ready, timeout_s=STARTUP_S, what="notifier ready", child=child)
    base = f"http://127.0.0.1:{port}"
    events = lambda order_id: f"{base}/v1/orders/{order_id}/events"  # noqa: E731

    await publish(broker, prefix, change("ord_before", OrderStatus.DELAYED, 1))
    await eventually(lambda: len(webhook.received.payloads) >= 1, timeout_s=60)
    before = Stream(events("ord_before"), key)
    streams = [before]
    try:
        await eventually(lambda: before.has(1), timeout_s=30)

        away: dict[str, list[int]] = {"healthz": [], "api": []}
        await asyncio.to_thread(own_database.stop)
        stopped_at = log_path.stat().st_size
        await publish(broker, prefix, change("ord_during", OrderStatus.DELAYED, 1))
        until = time.monotonic() + AWAY_S
        async with httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {key}"}) as api:
            while time.monotonic() < until:
                away["healthz"].append((await asyncio.to_thread(health, port) or (0, {}))[0])
                with contextlib.suppress(httpx.HTTPError):
                    away["api"].append((await api.get(f"{base}/v1/orders/ord_before/notifications")).status_code)
                await asyncio.sleep(0.5)
        await asyncio.to_thread(own_database.start)
        back = time.monotonic()
        await asyncio.to_thread(wait_for, ready, timeout_s=90, what="notifier ready again", child=child)
        recovered_s = time.monotonic() - back
        await eventually(
            lambda: any(p["order_id"] == "ord_during" for p in webhook.received.payloads.values()), timeout_s=60
        )

        after = Stream(events("ord_after"), key)
        streams.append(after)
        await eventually(lambda: after.has(0) or after.ended is not None, timeout_s=30)
        await asyncio.sleep(1)  # the new stream is watching its order
        published = time.monotonic()
        await publish(
            broker, prefix, change("ord_before", OrderStatus.CREDITED, 2), change("ord_after", OrderStatus.DELAYED, 1)
        )
        await eventually(lambda: len(webhook.received.payloads) >= 4, timeout_s=60)
        with contextlib.suppress(AssertionError):  # said below, with what each stream saw
            await eventually(lambda: before.has(2) and after.has(1), timeout_s=LIVE_S)
        summary = (
            f"/healthz while away {sorted(set(away['healthz']))}, API while away {sorted(set(away['api']))},"
            f" ready again after {recovered_s:.1f}s; stream opened before the failover: {before.seen}"
            f" ({before.ended or 'open'}), opened after: {after.seen} ({after.ended or 'open'}),"
            f" change published at {published:.1f}"
        )
        assert before.has(2), f"the change did not reach the page opened before the failover: {summary}"
        assert after.has(1), f"the change did not reach the page opened after the failover: {summary}"
    finally:
        for stream in streams:
            await stream.close()

    assert child.alive(), f"the notifier stopped:\n{child.tail(80)}"
    assert webhook.received.duplicates == 0, webhook.received.deliveries
    assert sorted((p["order_id"], p["status"]) for p in webhook.received.payloads.values()) == [
        ("ord_after", "delayed"),
        ("ord_before", "credited"),
        ("ord_before", "delayed"),
        ("ord_during", "delayed"),
    ]
    assert 503 in away["healthz"], summary
    assert 503 in away["api"] and 500 not in away["api"], summary
    assert api_answers(child, "500") == 0, summary
    ready_now = {s.labels["dependency"]: s.value for s in metric(child, "credited_dependency_ready")}
    assert ready_now == {"database": 1, "broker": 1}
    logged = log_path.read_text()
    assert "Exception in ASGI application" not in logged, child.tail(80)
    outage_lines = len(logged.encode()[stopped_at:].decode(errors="replace").splitlines())
    assert outage_lines < 200, f"{outage_lines} log lines over the failover:\n{child.tail(60)}"
