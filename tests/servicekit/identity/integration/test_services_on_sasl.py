"""A service started as it is deployed (`python -m ledger`, its settings from the environment) on the SASL
broker with the ACLs of servicekit.kafka_access: it consumes, publishes and dead-letters as its own principal,
and with a wrong password it stops at once saying so, rather than hang or loop on "Unable to bootstrap"."""

import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.base import Message
from contracts.codec import decode, encode, envelope_for
from contracts.commands import RetryCredit
from contracts.events import CreditPosted, PaymentSucceeded
from contracts.topics import Topic
from credited.stack.processes import Child, free_port, wait_for
from servicekit.kafka import KafkaPublisher, TopicsRefused, ensure_topics
from tests.servicekit.identity.kafka_admin import SaslBroker

M = TypeVar("M", bound=Message)

StartLedger = Callable[[str], tuple[Child, int]]
"""Starts the ledger with a Kafka password; its process and HTTP port."""

STARTUP_S = 120  # a deadline, not a sleep: the JVM broker and this Python share two loaded cores


def ledger_env(broker: SaslBroker, database_url: str, prefix: str, port: int, password: str) -> dict[str, str]:
    """What compose gives the ledger, but development mode (the test database has no password)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CREDITED_", "LEDGER_"))}
    return {
        **inherited,
        "CREDITED_ENV": "development",
        "KAFKA_BOOTSTRAP": broker.bootstrap,
        "KAFKA_BROKER": "apache",
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "ledger",
        "KAFKA_SASL_PASSWORD": password,
        "DATABASE_URL": database_url,
        "CREDITED_TOPIC_PREFIX": prefix,
        "CREDITED_TOPIC_PARTITIONS": "1",
        "LEDGER_HTTP_PORT": str(port),
        "LEDGER_METRICS_PORT": str(free_port()),  # its default, the HTTP port + 1000, nobody reserved
        "LEDGER_DB_SCHEMA": f"{prefix.rstrip('.')}_ledger",
    }


@pytest.fixture
def run_ledger(sasl_broker: SaslBroker, database_url: str, prefix: str, tmp_path: Path) -> Iterator[StartLedger]:
    """Starts `python -m ledger` with a password; stops it after the test whatever happened."""
    children: list[Child] = []

    def start(password: str) -> tuple[Child, int]:
        port = free_port()
        env = ledger_env(sasl_broker, database_url, prefix, port, password)
        child = Child("ledger", [sys.executable, "-m", "ledger"], log_path=tmp_path / "ledger.log", env=env)
        child.start()
        children.append(child)
        return child, port

    yield start
    for child in children:
        child.stop()


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def payment(order_id: str) -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id=order_id,
        user_id=f"user-{order_id}",
        amount=600,
        currency="CNY",
        channel="card",
        provider="sim",
        provider_txn_id=f"tx-{order_id}",
        paid_at=datetime.now(UTC),
    )


async def publish_as(broker: SaslBroker, principal: str, topic: str, message: PaymentSucceeded) -> None:
    publisher = KafkaPublisher(
        broker.bootstrap, idempotence=True, client_id=f"test-{principal}", security=broker.client(principal)
    )
    await publisher.start()
    try:
        await publisher.publish(topic, encode(message, envelope_for(message, producer=principal)))
    finally:
        await publisher.stop()


async def seen_by(broker: SaslBroker, principal: str, topic: str, kind: type[M], order_id: str) -> list[M]:
    """The `kind` messages for `order_id` on `topic`, read as `principal` (no group) once there is one."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False, **broker.client(principal)
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                messages = [decode(r.value, r.headers)[0] for r in records]
                found = [m for m in messages if isinstance(m, kind) and m.order_id == order_id]
                if found:
                    return found
        raise AssertionError(f"no {kind.__name__} for {order_id} on {topic} within {STARTUP_S} s")
    finally:
        await consumer.stop()


async def test_the_ledger_credits_a_payment_it_reads_and_announces_it_as_its_own_principal_on_sasl(
    sasl_broker: SaslBroker, prefix: str, run_ledger: StartLedger
) -> None:
    ledger, port = run_ledger(sasl_broker.passwords["ledger"])
    await asyncio.to_thread(wait_for, lambda: healthy(port), timeout_s=STARTUP_S, what="ledger /healthz", child=ledger)
    order_id = f"ord_{prefix.rstrip('.')}"
    await publish_as(sasl_broker, "payments", Topic.PAYMENTS_EVENTS.qualified(prefix), payment(order_id))
    credits = await seen_by(sasl_broker, "reconciler", Topic.LEDGER_EVENTS.qualified(prefix), CreditPosted, order_id)
    assert [(c.order_id, c.amount, c.currency) for c in credits] == [(order_id, 600, "CNY")]
    assert ledger.alive(), ledger.tail()


async def test_a_ledger_with_a_wrong_kafka_password_stops_at_start_naming_its_principal_and_the_setting(
    sasl_broker: SaslBroker, prefix: str, run_ledger: StartLedger
) -> None:
    ledger, _ = run_ledger("not-the-ledger-password")
    await asyncio.to_thread(wait_for, lambda: not ledger.alive(), timeout_s=STARTUP_S, what="the ledger to stop")
    log = ledger.tail(60)
    assert ledger.exit_code() == 1, log
    assert "refused User:ledger (SASL_PLAINTEXT, SCRAM-SHA-512)" in log, log
    assert "Check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD" in log, log
    assert "Traceback" not in log, log


async def test_a_service_that_may_not_create_a_missing_topic_stops_naming_it(
    sasl_broker: SaslBroker, prefix: str
) -> None:
    owned, missing = Topic.LEDGER_EVENTS.qualified(prefix), f"{prefix}never-created"
    with pytest.raises(TopicsRefused, match=rf"\['{missing}'\] do not exist and this principal may not create"):
        await ensure_topics(sasl_broker.bootstrap, [owned, missing], 1, security=sasl_broker.client("ledger"))


async def test_the_reconciler_flags_an_uncredited_payment_and_commands_a_retry_as_its_own_principal_on_sasl(
    sasl_broker: SaslBroker, prefix: str, tmp_path: Path
) -> None:
    """faust itself on the SASL broker: it joins its group, creates its changelog under its own prefix and
    sends the command, every client with the reconciler's SCRAM user (broker_credentials and its offsets
    reader)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CREDITED_", "RECONCILER_"))}
    env = {
        **inherited,
        "CREDITED_ENV": "development",
        "KAFKA_BOOTSTRAP": sasl_broker.bootstrap,
        "KAFKA_BROKER": "apache",
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "reconciler",
        "KAFKA_SASL_PASSWORD": sasl_broker.passwords["reconciler"],
        "CREDITED_TOPIC_PREFIX": prefix,
        "CREDITED_TOPIC_PARTITIONS": "1",
        "RECONCILER_HTTP_PORT": str(free_port()),
        "RECONCILER_METRICS_PORT": str(free_port()),
        "RECONCILER_THRESHOLD_S": "1",
        "RECONCILER_DATA_DIR": str(tmp_path / "reconciler"),
    }
    reconciler = Child(
        "reconciler", [sys.executable, "-m", "reconciler"], log_path=tmp_path / "reconciler.log", env=env
    )
    reconciler.start()
    try:
        order_id = f"ord_{prefix.rstrip('.')}"
        await publish_as(sasl_broker, "payments", Topic.PAYMENTS_EVENTS.qualified(prefix), payment(order_id))
        commands = await seen_by(sasl_broker, "ledger", Topic.LEDGER_COMMANDS.qualified(prefix), RetryCredit, order_id)
        assert [c.order_id for c in commands][:1] == [order_id], reconciler.tail()
        assert reconciler.alive(), reconciler.tail()
    finally:
        reconciler.stop()
