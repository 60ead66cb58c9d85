"""docs/contracts.md's Kafka examples reach a broker that admits only authenticated clients, as docker compose's
does (every listener SASL_PLAINTEXT): given the settings credited's services read, a platform publishes a payment
with the payments principal's rights and credited decodes it."""

import asyncio
import os
import sys

from aiokafka import AIOKafkaConsumer

from contracts import PaymentSucceeded, Topic, decode
from tests.conftest import ROOT
from tests.servicekit.identity.kafka_admin import SaslBroker

EXAMPLE = ROOT / "docs" / "examples" / "publish_payment_aiokafka.py"


async def test_the_aiokafka_example_publishes_a_payment_through_sasl_with_the_services_settings(
    sasl_broker: SaslBroker, prefix: str
) -> None:
    topic = Topic.PAYMENTS_EVENTS.qualified(prefix)
    env = {
        **os.environ,
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "payments",
        "KAFKA_SASL_PASSWORD": sasl_broker.passwords["payments"],
    }
    args = ["--bootstrap", sasl_broker.bootstrap, "--topic", topic, "--order-id", "ord_sasl_1", "--user-id", "u1"]
    args += ["--amount", "600", "--currency", "CNY", "--channel", "alipay", "--provider", "alipay"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), *args, "--provider-txn-id", "sasl-1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=sasl_broker.bootstrap, auto_offset_reset="earliest", **sasl_broker.client("admin")
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000)
    finally:
        await consumer.stop()
    records = [r for rs in batch.values() for r in rs]
    assert len(records) == 1 and records[0].key == b"ord_sasl_1"
    message, envelope = decode(records[0].value, records[0].headers)
    assert isinstance(message, PaymentSucceeded) and (message.amount, message.currency) == (600, "CNY")
    assert envelope.event_id in out.decode()
