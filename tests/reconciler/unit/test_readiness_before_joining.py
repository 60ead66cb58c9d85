"""A worker's /healthz says ready only once the worker is in its consumer group. Before its consumer has been
handed an assignment faust is neither rebalancing nor recovering, so a worker whose join or changelog creation hung
(seen on Tansu: five minutes at "Creating topic") answered 200 while it read and detected nothing. It answers 503
naming the join until its first assignment, an empty one included (more workers than partitions)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from reconciler.adapters import faust_app
from reconciler.config import Settings


async def health(app: object) -> tuple[int, dict[str, object]]:
    view = app.web.views["/healthz"]  # type: ignore[attr-defined]
    response = await view.dispatch(SimpleNamespace(method="GET", match_info={}, query={}, headers={}))
    return response.status, json.loads(response.body)


async def test_a_worker_answers_not_ready_until_its_consumer_is_handed_its_first_assignment_even_an_empty_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILER_DATA_DIR", str(tmp_path))
    app = faust_app.build_app(Settings(), CollectorRegistry(), authenticator=None)  # type: ignore[arg-type]
    try:
        status, body = await health(app)
        assert status == 503, body
        assert body["error"] == "not_ready" and "joining its consumer group" in str(body["detail"]), body

        app.transport.on_assigned(set())  # the group gave this worker no partition: it is in the group all the same
        status, body = await health(app)
        assert (status, body["status"]) == (200, "ok"), body
    finally:
        await app.http_client.close()
