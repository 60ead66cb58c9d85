"""The runnable examples of docs/examples, run as a platform team would run them, against the real broker:
publish a PaymentSucceeded (kcat, aiokafka), follow orders.status, verify a credited webhook's signature."""

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from contracts import OrderStatus, PaymentSucceeded, Topic, decode, encode
from contracts.codec import envelope_for
from credited.stack.processes import free_port
from servicekit.kafka import KafkaPublisher, ensure_topics
from servicekit.signatures import sign
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_until
from tests.notifier.harness import change, notifier_settings, publish, start_notifier

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


async def run(*command: str, env: dict[str, str] | None = None, timeout_s: float = 120) -> tuple[str, str]:
    """Run an example to its end; its stdout and stderr. It must exit 0."""
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode == 0, err.decode()
    return out.decode(), err.decode()


async def published_payments(broker: Broker, topic: str, count: int) -> list[tuple[bytes, PaymentSucceeded, str]]:
    """(key, message, event id) of the first `count` records on `topic`, decoded as credited decodes them."""
    records = await read_until(broker.bootstrap, topic, lambda r: len(r) >= count)
    decoded = []
    for record in records:
        message, envelope = decode(record.value, record.headers)
        assert isinstance(message, PaymentSucceeded) and envelope.event_type == "PaymentSucceeded"
        assert envelope.correlation_id == message.order_id and envelope.schema_version == 1
        assert {k for k, _ in record.headers} == {
            "event_type", "schema_version", "event_id", "correlation_id", "occurred_at", "producer"
        }  # fmt: skip
        decoded.append((record.key, message, envelope.event_id))
    return decoded


async def test_the_kcat_example_publishes_a_payment_credited_decodes_and_a_repeat_keeps_its_event_id(
    broker: Broker, isolation: str
) -> None:
    if broker.kind == "embedded":
        pytest.fail(
            "needs Apache Kafka (CREDITED_TEST_BROKER=apache): Debian's kcat (librdkafka 2.x) fails its"
            " ApiVersions handshake with the embedded Tansu broker (Read underflow) and cannot connect at all"
        )
    topic = Topic.PAYMENTS_EVENTS.qualified(f"{isolation}.")
    await ensure_topics(broker.bootstrap, [topic], partitions=3)
    script = str(EXAMPLES / "publish_payment_kcat.sh")
    env = {"KAFKA_BOOTSTRAP": broker.bootstrap, "CREDITED_TOPIC": topic}
    args = ["ord_kcat_1", "user_1", "64800", "JPY", "konbini", "sim", "tx-kcat-1"]
    for _ in range(2):  # the platform retries the same payment
        await run(script, *args, env=env)
    (key, first, first_id), (_, second, second_id) = await published_payments(broker, topic, 2)
    assert key == b"ord_kcat_1"
    assert (first.user_id, first.amount, first.currency, first.channel) == ("user_1", 64800, "JPY", "konbini")
    assert (first.provider, first.provider_txn_id) == ("sim", "tx-kcat-1")
    assert first_id == second_id == "sim:tx-kcat-1:PaymentSucceeded" and second.order_id == "ord_kcat_1"


async def test_the_aiokafka_example_publishes_a_payment_credited_decodes(broker: Broker, isolation: str) -> None:
    topic = Topic.PAYMENTS_EVENTS.qualified(f"{isolation}.")
    await ensure_topics(broker.bootstrap, [topic], partitions=3)
    command = [sys.executable, str(EXAMPLES / "publish_payment_aiokafka.py"), "--bootstrap", broker.bootstrap]
    command += ["--topic", topic, "--order-id", "ord_aio_1", "--user-id", "user_2", "--amount", "600"]
    command += ["--currency", "CNY", "--channel", "alipay", "--provider", "alipay", "--provider-txn-id", "2026-1"]
    if not broker.idempotence:
        command.append("--no-idempotence")
    out, _ = await run(*command)
    ((key, message, event_id),) = await published_payments(broker, topic, 1)
    assert key == b"ord_aio_1" and (message.amount, message.currency) == (600, "CNY")
    assert event_id in out


async def test_the_status_example_prints_each_change_once_in_order_skips_bad_records_and_commits(
    broker: Broker, isolation: str
) -> None:
    prefix = f"{isolation}."
    topic = Topic.ORDERS_STATUS.qualified(prefix)
    await ensure_topics(broker.bootstrap, [topic], partitions=1)  # one partition: the order of the test is total
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test", topic_prefix=prefix)
    await publisher.start()
    delayed, credited = change("ord_a", OrderStatus.DELAYED, 1), change("ord_a", OrderStatus.CREDITED, 2)
    records = [encode(c, envelope_for(c, producer="reconciler")) for c in (delayed, credited)]
    garbage = encode(delayed, envelope_for(delayed, producer="reconciler"))
    records.append(type(garbage)(key=garbage.key, value=b"{not json", headers=garbage.headers))
    records.append(encode(delayed, envelope_for(delayed, producer="reconciler")))  # a late repeat
    other = change("ord_b", OrderStatus.CREDITED, 1)
    records.append(encode(other, envelope_for(other, producer="reconciler")))
    try:
        await publisher.publish_many([(topic, r) for r in records])
        follow = [sys.executable, str(EXAMPLES / "consume_order_status.py"), "--bootstrap", broker.bootstrap]
        follow += ["--topic", topic, "--group", f"{isolation}.platform"]
        out, err = await run(*follow, "--stop-after", "3")
        lines = [json.loads(line) for line in out.splitlines()]
        assert [(x["order_id"], x["status"], x["sequence"]) for x in lines] == [
            ("ord_a", "delayed", 1),
            ("ord_a", "credited", 2),
            ("ord_b", "credited", 1),
        ]
        assert "does not decode" in err
        later = change("ord_c", OrderStatus.CREDITED, 1)
        await publisher.publish(topic, encode(later, envelope_for(later, producer="reconciler")))
        out, _ = await run(*follow, "--stop-after", "1")  # the same group starts where it committed
        assert [json.loads(line)["order_id"] for line in out.splitlines()] == ["ord_c"]
    finally:
        await publisher.stop()


async def test_the_webhook_example_accepts_what_the_notifier_signs_and_refuses_tampering_and_replays(
    broker: Broker, database_url: str, isolation: str
) -> None:
    port = free_port()
    receiver = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "verify_webhook.py"),
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CREDITED_WEBHOOK_SECRET": "old-secret,hook-secret"},
    )
    assert receiver.stdout is not None and receiver.stderr is not None
    running = None
    try:
        assert b"listening" in await asyncio.wait_for(receiver.stderr.readline(), 30)
        url = f"http://127.0.0.1:{port}/credited"
        settings = notifier_settings(broker, database_url, isolation, webhook_url=url, webhook_secret="hook-secret")
        running = await start_notifier(settings)
        await publish(broker, f"{isolation}.", change("ord_hook", OrderStatus.CREDITED, 2))
        verified = json.loads(await asyncio.wait_for(receiver.stdout.readline(), 60))
        assert (verified["order_id"], verified["status"], verified["sequence"]) == ("ord_hook", "credited", 2)
        await eventually(running.settled)
        body = json.dumps(verified).encode()
        async with httpx.AsyncClient() as client:
            now = int(time.time())
            signed = await client.post(url, content=body, headers={"x-signature": sign("hook-secret", body, now)})
            tampered = await client.post(
                url,
                content=body.replace(b"credited", b"refunded"),
                headers={"x-signature": sign("hook-secret", body, now)},
            )
            replayed = await client.post(
                url, content=body, headers={"x-signature": sign("hook-secret", body, now - 600)}
            )
            stranger = await client.post(url, content=body, headers={"x-signature": sign("guess", body, now)})
        assert signed.status_code == 204
        assert [r.status_code for r in (tampered, replayed, stranger)] == [401, 401, 401]
        assert tampered.json()["error"] == "bad_signature"
    finally:
        if running is not None:
            await running.stop()
        receiver.terminate()
        await receiver.wait()
