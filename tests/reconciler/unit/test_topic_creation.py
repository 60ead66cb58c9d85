"""A worker whose request to create a topic (its table's changelog, at start) is never answered asks again after
the request's own timeout, instead of waiting hours for it: faust hands mode's `wait` that timeout in
milliseconds, where it takes seconds. faust's own creation path runs here, on the transport and producer the
reconciler builds; only the broker's client is a stand-in, one that loses the first creation request."""

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from reconciler.bootstrap import build
from reconciler.config import Settings


class LosesTheFirstCreation:
    """An aiokafka client as faust's topic creation uses it: one broker, the controller; the first
    CreateTopics request is never answered, the next ones are."""

    def __init__(self) -> None:
        self.creations = 0
        self.cluster = SimpleNamespace(topics=set, brokers=lambda: [SimpleNamespace(nodeId=1)])

    async def send(self, node_id: int, request: Any) -> Any:
        if "Metadata" in type(request).__name__:
            return SimpleNamespace(controller_id=1)
        self.creations += 1
        if self.creations == 1:
            await asyncio.Event().wait()  # lost on the way: no answer ever comes
        return SimpleNamespace(topic_errors=[("orders-changelog", 0, None)])


async def test_a_topic_creation_the_broker_never_answers_is_asked_again_after_the_request_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RECONCILER_DATA_DIR", str(tmp_path))
    app = build(Settings())
    client = LosesTheFirstCreation()

    async with asyncio.timeout(30):  # faust alone would wait 1,000 s (1,000 "seconds" from 1 s in ms)
        await app.transport._create_topic(app.producer, client, "orders-changelog", 6, 1, timeout=1_000)

    assert client.creations == 2
    assert any("did not answer the creation of topic orders-changelog" in r.getMessage() for r in caplog.records)
