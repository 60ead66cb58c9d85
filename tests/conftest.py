"""Shared fixtures: a real broker and a real PostgreSQL for integration and end-to-end tests.

CREDITED_TEST_BROKER picks the broker: `embedded` (Tansu, the default), `apache` (Apache Kafka from
Maven Central jars via scripts/apache-kafka), `apache@HOST:PORT` (an Apache Kafka already running there, which
scripts/run-tests starts once for its pytest processes), or a bootstrap address of another running Kafka.
CREDITED_TEST_DATABASE_URL points at a running PostgreSQL; unset, an embedded server is started.
Every test gets its own topic prefix, consumer groups and database schema.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from credited.stack.embedded import EmbeddedKafka, EmbeddedPostgres
from credited.stack.processes import Child, free_port

pytest_plugins = [
    "tests.stoppable_broker",  # own_broker: a broker a test stops and starts
    "tests.cpu_report",  # each test's CPU time, its processes' included, for the costliest tests
]

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Broker:
    kind: str
    bootstrap: str

    @property
    def idempotence(self) -> bool:
        """Tansu refuses idempotent producers; Apache Kafka gets them, as in production."""
        return self.kind != "embedded"


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    choice = os.environ.get("CREDITED_TEST_BROKER", "embedded")
    workdir = Path(tempfile.mkdtemp(prefix="credited-broker-"))
    try:
        if choice == "embedded":
            kafka = EmbeddedKafka(free_port(), workdir)
            kafka.start()
            try:
                yield Broker("embedded", kafka.bootstrap)
            finally:
                kafka.stop()
        elif choice.startswith("apache@"):
            yield Broker("apache", choice.removeprefix("apache@"))
        elif choice == "apache":
            script = str(ROOT / "scripts" / "apache-kafka")
            ports = ["--port", str(free_port()), "--controller-port", str(free_port())]
            out = subprocess.run(
                [script, "start", "--dir", str(workdir), *ports], check=True, capture_output=True, text=True
            )
            try:
                yield Broker("apache", out.stdout.strip().splitlines()[-1])
            finally:
                subprocess.run([script, "stop", "--dir", str(workdir)], check=False)
        else:
            yield Broker("external", choice)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    external = os.environ.get("CREDITED_TEST_DATABASE_URL")
    if external:
        yield external
        return
    workdir = Path(tempfile.mkdtemp(prefix="credited-pg-"))
    server = EmbeddedPostgres(workdir / "data", free_port(), workdir)
    server.start()
    try:
        yield server.dsn
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def isolation() -> str:
    """A unique name for this test's topics, consumer groups and schemas."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def own_database() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of the test's own, which it may stop and start (a failover), outside pytest's temporary
    directories (whose root another pytest run may close to every user but root, and PostgreSQL runs as its own
    user when the tests run as root)."""
    workdir = Path(tempfile.mkdtemp(prefix="credited-pg-"))
    server = EmbeddedPostgres(workdir / "data", free_port(), workdir)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Service processes a test starts: each is killed at its end, whatever the test left running."""
    started: list[Child] = []
    yield started
    for child in started:
        child.stop(signal.SIGKILL)
