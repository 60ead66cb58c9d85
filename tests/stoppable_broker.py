"""A broker of the session's kind that a test starts and stops itself, and a service's /healthz read plainly."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from credited.chaos.infra import ApacheBroker
from credited.stack.embedded import EmbeddedKafka
from credited.stack.processes import free_port
from tests.conftest import Broker


class StoppableBroker:
    """A broker of the session's kind on ports of its own, started and stopped by the test."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self._apache = ApacheBroker(directory) if kind == "apache" else None
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
