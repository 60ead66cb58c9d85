"""A real Apache Kafka with SASL/SCRAM and ACLs (scripts/apache-kafka --sasl), whatever CREDITED_TEST_BROKER
says: one for this package's tests, stopped when they are done rather than idling through the rest of the session,
and on the C1 compiler alone like every short-lived test broker (tests/stoppable_broker.py). A SCRAM user per
service principal plus the super user `admin`, each with a fresh password. Each test gets its own topics (created
by the super user) and the services' grants on them."""

import asyncio
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from contracts.topics import Topic
from credited.stack.processes import free_port
from harness.chaos.infra import with_jvm_opts
from servicekit.kafka_access import ACCESS, grants
from tests.conftest import ROOT
from tests.servicekit.identity.kafka_admin import SaslBroker, apply_grants
from tests.stoppable_broker import SHORT_LIVED_JVM

SCRIPT = str(ROOT / "scripts" / "apache-kafka")


@pytest.fixture(scope="package")
def sasl_broker() -> Iterator[SaslBroker]:
    workdir = Path(tempfile.mkdtemp(prefix="credited-sasl-broker-"))
    passwords = {name: secrets.token_urlsafe(24) for name in ("admin", *ACCESS)}
    users = workdir / "users"
    users.write_text("".join(f"{n}={p}\n" for n, p in passwords.items()))
    users.chmod(0o600)
    ports = ["--port", str(free_port()), "--controller-port", str(free_port())]
    started = subprocess.run(
        [SCRIPT, "start", "--dir", str(workdir / "broker"), *ports, "--sasl", str(users)],
        check=True,
        capture_output=True,
        text=True,
        env=with_jvm_opts(SHORT_LIVED_JVM),
    )
    try:
        yield SaslBroker(started.stdout.strip().splitlines()[-1], passwords)
    finally:
        subprocess.run([SCRIPT, "stop", "--dir", str(workdir / "broker")], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def prefix(sasl_broker: SaslBroker, isolation: str) -> str:
    """This test's topics, created by the super user, and the services' grants on them."""
    prefix = f"{isolation}."
    admin = AIOKafkaAdminClient(bootstrap_servers=sasl_broker.bootstrap, **sasl_broker.client("admin"))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t.qualified(prefix), 1, 1) for t in Topic])
    finally:
        await admin.close()
    await asyncio.to_thread(apply_grants, sasl_broker.bootstrap, sasl_broker.passwords["admin"], grants(prefix))
    return prefix
