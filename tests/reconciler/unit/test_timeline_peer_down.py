"""The timeline page of a worker that does not have the order asks the worker the group's metadata names. When
that worker is gone (SIGKILLed, still in the metadata until its session times out), the page answers 503 naming
it, which the caller can retry, never faust's 500."""

import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from reconciler.adapters import faust_app
from reconciler.config import Settings
from servicekit.identity import Scope


class Everyone:
    async def authenticate(self, key: str) -> object:
        return SimpleNamespace(scopes=frozenset(Scope), name="support")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_timeline_answers_a_retryable_error_when_the_worker_that_has_the_order_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RECONCILER_PEER_SECRET", "x" * 40)
    app = faust_app.build_app(Settings(), CollectorRegistry(), Everyone())  # type: ignore[arg-type]
    gone = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(faust_app, "_owner", lambda app, table, order_id: gone)
    view = app.web.views["/v1/orders/{order_id}/timeline"]
    request = SimpleNamespace(
        method="GET", match_info={"order_id": "ord_1"}, query={}, headers={"Authorization": "Bearer k"}
    )
    try:
        response = await view.dispatch(request)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"the page raised {exc!r}: faust's web driver answers 500")
    finally:
        await app.http_client.close()
    assert response.status == 503
    assert b'"error":"unavailable"' in response.body.replace(b" ", b"") and b"did not answer" in response.body
