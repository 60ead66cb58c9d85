"""`credited dlq replay` on a broker with ACLs, as a principal that may not create the replays log: it says so in a
sentence and sends nothing (it went on past the refused create, and stopped on the next refusal, which named the
transactional id instead of the missing topic)."""

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from typer.testing import CliRunner

from credited.cli import app
from tests.servicekit.identity.kafka_admin import SaslBroker


async def test_a_replay_by_a_principal_that_may_not_make_the_replays_log_says_so_and_sends_nothing(
    sasl_broker: SaslBroker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "KAFKA_BOOTSTRAP": sasl_broker.bootstrap,
        "KAFKA_BROKER": "apache",
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "ledger",  # writes dead letters; creates no topic
        "KAFKA_SASL_PASSWORD": sasl_broker.passwords["ledger"],
        "CREDITED_TOPIC_PREFIX": prefix,
    }.items():
        monkeypatch.setenv(name, value)

    done = await asyncio.to_thread(CliRunner().invoke, app, ["dlq", "replay", "--all", "--by", "on-call"])

    said = " ".join(done.stderr.split())
    assert done.exit_code == 2, (done.stdout, done.stderr)
    assert f"topics ['{prefix}credited.deadletter.replays'] do not exist and this principal may not create them" in said
    assert "cleanup.policy=compact" in said and "Traceback" not in said
    admin = AIOKafkaAdminClient(bootstrap_servers=sasl_broker.bootstrap, **sasl_broker.client("admin"))
    await admin.start()
    try:
        assert f"{prefix}credited.deadletter.replays" not in await admin.list_topics()
    finally:
        await admin.close()
