"""A broker of the session's kind that a test starts and stops itself, and a service's /healthz read plainly."""

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from credited.stack.embedded import EmbeddedKafka
from credited.stack.processes import free_port
from harness.chaos.infra import ApacheBroker
from tests.conftest import Broker

SHORT_LIVED_JVM = "-XX:TieredStopAtLevel=1"
"""A test's own Apache Kafka lives a minute or two per JVM, too short for the C2 compiler to pay for itself. Measured
under load like a test's (12 consumers polling, 640 records/s): 7.2 core-s to start and 33 in the first minute with
C2, 3.6-4.9 and 17-21 with C1 alone; C2 wins only after about four minutes (9.6 core-s a minute against C1's 15),
so the session's broker keeps it."""


class StoppableBroker:
    """A broker of the session's kind on ports of its own, started and stopped by the test."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self._apache = ApacheBroker(directory, jvm_opts=SHORT_LIVED_JVM) if kind == "apache" else None
        self._tansu = None if self._apache else EmbeddedKafka(free_port(), directory)

    @property
    def bootstrap(self) -> str:
        return self._apache.bootstrap if self._apache else self._tansu.bootstrap  # type: ignore[union-attr]

    def start(self) -> None:
        (self._apache or self._tansu).start()  # type: ignore[union-attr]

    def stop(self) -> None:
        (self._apache or self._tansu).stop()  # type: ignore[union-attr]


@pytest.fixture
def own_broker(broker: Broker, tmp_path: Path) -> Iterator[StoppableBroker]:
    own = StoppableBroker("apache" if broker.kind == "apache" else "embedded", tmp_path / "broker")
    yield own
    own.stop()


def health(port: int) -> tuple[int, dict[str, object]] | None:
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    except httpx.HTTPError:
        return None
    return answer.status_code, answer.json()


def service_env(
    service: str, bootstrap: str, kind: str, database_url: str, isolation: str, **own: str
) -> dict[str, str]:
    """The environment of a service process on a test's own topics (one partition each) and schema, in
    development mode: this process's environment without its Kafka, credited or service settings, then
    `own` (the service's own settings, named without their prefix: http_port="8101").

    Its /metrics port is a free one of its own: the default, the HTTP port + 1000, is a port nobody reserved, and
    when another process of the test run holds it the service cannot start."""
    prefix = f"{service.upper()}_"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CREDITED_", prefix))}
    return {
        **inherited,
        "CREDITED_ENV": "development",
        "KAFKA_BOOTSTRAP": bootstrap,
        "KAFKA_BROKER": "apache" if kind == "apache" else "tansu",
        "DATABASE_URL": database_url,
        "CREDITED_TOPIC_PREFIX": f"{isolation}.",
        "CREDITED_TOPIC_PARTITIONS": "1",
        f"{prefix}DB_SCHEMA": f"{isolation}_{service}",
        # Its own API keys' schema: the shared default may exist already, owned by another role.
        "CREDITED_IDENTITY_SCHEMA": f"{isolation}_identity",
        f"{prefix}METRICS_PORT": str(free_port()),
        **{f"{prefix}{name.upper()}": value for name, value in own.items()},
    }
