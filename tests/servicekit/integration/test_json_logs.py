"""Logs you can follow an order through: the ledger run as a process with CREDITED_LOG_FORMAT=json writes one JSON
object a line, and an order's dead-lettered message is found in them by its order_id, with its event id and the
service; its HTTP answers carry X-Request-ID. Real PostgreSQL and the session's broker (CREDITED_TEST_BROKER)."""

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from contracts.codec import Record, encode, envelope_for
from contracts.topics import Topic
from credited.stack.processes import Child, free_port, wait_for
from servicekit.kafka import KafkaPublisher
from tests.conftest import Broker
from tests.servicekit.events import paid

STARTUP_S = 120  # deadlines, not sleeps: a JVM broker and these processes share two loaded cores


@pytest.fixture
def ledger_with_json_logs(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> Iterator[tuple[Child, int]]:
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CREDITED_", "LEDGER_"))}
    env = {
        **inherited,
        "CREDITED_ENV": "development",  # console lines by default: JSON is chosen
        "CREDITED_LOG_FORMAT": "json",
        "KAFKA_BOOTSTRAP": broker.bootstrap,
        "KAFKA_BROKER": "apache" if broker.idempotence else "tansu",
        "DATABASE_URL": database_url,
        "CREDITED_TOPIC_PREFIX": f"{isolation}.",
        "CREDITED_TOPIC_PARTITIONS": "1",
        "LEDGER_HTTP_PORT": str(port),
        "LEDGER_METRICS_PORT": str(free_port()),  # its default, the HTTP port + 1000, nobody reserved
        "LEDGER_DB_SCHEMA": f"{isolation}_ledger",
    }
    child = Child("ledger", [sys.executable, "-m", "ledger"], log_path=tmp_path / "ledger.log", env=env)
    child.start()
    ready = lambda: _status(port) == 200  # noqa: E731
    wait_for(ready, timeout_s=STARTUP_S, what="ledger ready", child=child)
    yield child, port
    child.stop()


def _status(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
    except httpx.HTTPError:
        return None


def _json_lines(path: Path) -> list[dict[str, object]]:
    """Every line of the log, each a JSON object (json.loads raises on a line that is not one)."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert all(isinstance(line, dict) for line in lines)
    return lines


async def test_an_orders_lines_are_found_by_its_order_id_in_the_ledgers_json_logs(
    ledger_with_json_logs: tuple[Child, int], broker: Broker, database_url: str, isolation: str
) -> None:
    ledger, port = ledger_with_json_logs
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        sent = await client.get("/healthz", headers={"X-Request-ID": f"req-{isolation}"})
        made = await client.get("/healthz")
    assert sent.headers["X-Request-ID"] == f"req-{isolation}"
    assert len(made.headers["X-Request-ID"]) == 32

    order_id = f"ord_{isolation}"
    payment = paid(order_id)
    envelope = envelope_for(payment, producer="payments")
    good = encode(payment, envelope)
    garbled = Record(key=good.key, value=b'{"order_id": ', headers=good.headers)  # its copy that cannot decode
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test")
    await publisher.start()
    try:
        topic = Topic.PAYMENTS_EVENTS.qualified(f"{isolation}.")
        await publisher.publish(topic, good)
        await publisher.publish(topic, garbled)
    finally:
        await publisher.stop()

    conn = await asyncpg.connect(database_url, server_settings={"search_path": f"{isolation}_ledger"})
    loop = asyncio.get_running_loop()
    try:

        def credited() -> bool:
            count = asyncio.run_coroutine_threadsafe(
                conn.fetchval("SELECT count(*) FROM transactions WHERE order_id = $1", order_id), loop
            )
            return bool(count.result(timeout=10) == 1)

        await asyncio.to_thread(wait_for, credited, timeout_s=STARTUP_S, what="the credit", child=ledger)
    finally:
        await conn.close()

    def the_orders_lines() -> list[dict[str, object]]:
        return [line for line in _json_lines(ledger.log_path) if line.get("order_id") == order_id]

    await asyncio.to_thread(
        wait_for, lambda: bool(the_orders_lines()), timeout_s=STARTUP_S, what="the order's log line", child=ledger
    )
    (line,) = the_orders_lines()
    assert str(line["event"]).startswith("dead-lettering") and "undecodable" in str(line["event"]), line
    assert (line["service"], line["level"], line["event_id"]) == ("ledger", "error", envelope.event_id)
    assert line["correlation_id"] == envelope.correlation_id
    assert {"timestamp", "logger"} <= line.keys()
    assert all(other["service"] == "ledger" for other in _json_lines(ledger.log_path))
    assert ledger.alive(), ledger.tail()
