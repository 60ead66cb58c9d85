"""Each service's Kafka principal on a real Apache Kafka with SASL/SCRAM and ACLs (scripts/apache-kafka
--sasl, started by conftest whatever CREDITED_TEST_BROKER says): it writes the topics it owns and reads the
topics it consumes, in its own groups, and is refused everything else."""

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from contracts.topics import Topic
from servicekit.kafka import producer_config
from servicekit.kafka_access import RECONCILER_APP
from servicekit.kafka_security import aiokafka_security
from tests.servicekit.identity.kafka_admin import SaslBroker

REFUSED = (TopicAuthorizationFailedError, GroupAuthorizationFailedError)


async def publish(broker: SaslBroker, principal: str, topic: str) -> None:
    """One record, idempotent and acks=all as every service publishes."""
    config = producer_config(broker.bootstrap, idempotence=True, client_id=principal)
    producer = AIOKafkaProducer(**{**config, **broker.client(principal), "request_timeout_ms": 10_000})
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"{}", key=b"ord_1"), 30)
    finally:
        await producer.stop()


async def consume_one(broker: SaslBroker, principal: str, topic: str, group: str) -> bytes:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **broker.client(principal),
    )
    try:
        await asyncio.wait_for(consumer.start(), 30)
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                await consumer.commit()
                return records[0].key or b""
        raise AssertionError(f"{principal} read nothing from {topic} in 30 s")
    finally:
        await consumer.stop()


async def test_a_service_writes_its_own_topics_and_is_refused_a_topic_it_does_not_own(
    sasl_broker: SaslBroker, prefix: str
) -> None:
    await publish(sasl_broker, "payments", Topic.PAYMENTS_EVENTS.qualified(prefix))
    await publish(sasl_broker, "payments", Topic.DEAD_LETTER.qualified(prefix))
    for foreign in (Topic.LEDGER_EVENTS, Topic.ORDERS_STATUS, Topic.PAYMENTS_COMMANDS, Topic.SUPPORT_CASES):
        with pytest.raises(TopicAuthorizationFailedError):
            await publish(sasl_broker, "payments", foreign.qualified(prefix))


async def test_only_the_reconciler_and_payments_support_acts_can_command_the_ledger(
    sasl_broker: SaslBroker, prefix: str
) -> None:
    await publish(sasl_broker, "reconciler", Topic.LEDGER_COMMANDS.qualified(prefix))
    await publish(sasl_broker, "payments", Topic.LEDGER_COMMANDS.qualified(prefix))  # a person's act, recorded
    for principal in ("ledger", "notifier"):
        with pytest.raises(TopicAuthorizationFailedError):
            await publish(sasl_broker, principal, Topic.LEDGER_COMMANDS.qualified(prefix))


async def test_only_payments_can_re_drive_a_credit_and_the_ledger_reads_it_in_its_commands_group(
    sasl_broker: SaslBroker, prefix: str
) -> None:
    # A re-drive may lift the ledger's block on an order: the reconciler, which writes ledger.commands, may not.
    redrives = Topic.LEDGER_REDRIVES.qualified(prefix)
    await publish(sasl_broker, "payments", redrives)  # a person's re-drive through the support API
    for principal in ("reconciler", "ledger", "notifier"):
        with pytest.raises(TopicAuthorizationFailedError):
            await publish(sasl_broker, principal, redrives)
    assert await consume_one(sasl_broker, "ledger", redrives, f"{prefix}ledger.commands") == b"ord_1"
    with pytest.raises(REFUSED):
        await consume_one(sasl_broker, "payments", redrives, f"{prefix}ledger.commands")


async def test_only_the_reconciler_can_command_payments(sasl_broker: SaslBroker, prefix: str) -> None:
    await publish(sasl_broker, "reconciler", Topic.PAYMENTS_COMMANDS.qualified(prefix))
    for principal in ("payments", "ledger", "notifier"):
        with pytest.raises(TopicAuthorizationFailedError):
            await publish(sasl_broker, principal, Topic.PAYMENTS_COMMANDS.qualified(prefix))


async def test_a_service_reads_what_it_consumes_in_its_own_group_and_nothing_else(
    sasl_broker: SaslBroker, prefix: str
) -> None:
    await publish(sasl_broker, "reconciler", Topic.ORDERS_STATUS.qualified(prefix))
    status = Topic.ORDERS_STATUS.qualified(prefix)
    assert await consume_one(sasl_broker, "notifier", status, f"{prefix}notifier.order-status") == b"ord_1"
    with pytest.raises(REFUSED):
        await consume_one(sasl_broker, "notifier", Topic.PAYMENTS_EVENTS.qualified(prefix), f"{prefix}notifier.x")
    with pytest.raises(GroupAuthorizationFailedError):
        # Its own topic, but another service's group: it could steal the ledger's partitions.
        await consume_one(sasl_broker, "notifier", status, f"{prefix}payments.order-status")
    with pytest.raises(REFUSED):
        await consume_one(sasl_broker, "payments", Topic.LEDGER_COMMANDS.qualified(prefix), f"{prefix}ledger.commands")


async def test_the_reconciler_may_create_its_changelog_and_no_other_topic(sasl_broker: SaslBroker, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=sasl_broker.bootstrap, **sasl_broker.client("reconciler"))
    await admin.start()
    try:
        answer = await admin.create_topics(
            [NewTopic(f"{prefix}{RECONCILER_APP}-order-state-changelog", 1, 1), NewTopic(f"{prefix}made-up", 1, 1)]
        )
    finally:
        await admin.close()
    errors = {topic: code for topic, code, *_ in answer.topic_errors}
    assert errors == {
        f"{prefix}{RECONCILER_APP}-order-state-changelog": 0,
        f"{prefix}made-up": TopicAuthorizationFailedError.errno,
    }


async def test_a_wrong_password_gets_no_connection(sasl_broker: SaslBroker) -> None:
    settings = sasl_broker.settings("payments", password="not-the-password")
    producer = AIOKafkaProducer(bootstrap_servers=sasl_broker.bootstrap, **aiokafka_security(settings))
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(producer.start(), 30)
    await producer.stop()
