"""Least privilege for the reconciler's pages, as for the other services' routes: every route of faust's web
router (its own blueprints included, as a worker installs them) answers 401 without a key and 403 with a key
lacking its scope, in credited's error body, through the real key store. A new page fails here until it names
its scope (`requires` in reconciler.adapters.page_keys) or is added to OPEN with the reason it needs no key."""

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import faust
import httpx
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from reconciler.adapters.faust_app import build_app
from reconciler.adapters.page_keys import LazyKeyStore
from reconciler.adapters.peers import PEER_HEADER, PeerGrants
from reconciler.config import Settings
from servicekit.identity import Authenticator, PostgresKeyStore, Scope
from servicekit.identity.guard import SCOPES_ATTRIBUTE
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.service_settings import settings_for
from tests.servicekit.identity.integration.test_every_route_needs_a_key import OPEN as SERVICES_OPEN
from tests.servicekit.identity.integration.test_every_route_needs_a_key import concrete

OPEN = {
    ("GET", "/healthz"): SERVICES_OPEN[("GET", "/healthz")],
    ("GET", "/"): "faust's production index: answers {'status': 'OK'} and nothing else",
}
"""The reconciler's pages that answer without an API key, and why."""


@dataclass
class Pages:
    app: faust.App
    client: httpx.AsyncClient
    keys: PostgresKeyStore
    authenticator: Authenticator
    settings: Settings


@pytest.fixture
async def pages(broker: Broker, database_url: str, isolation: str, tmp_path: Path) -> AsyncIterator[Pages]:
    settings = settings_for(
        Settings,
        broker,
        database_url,
        isolation,
        data_dir=tmp_path,
        api_key_cache_ttl_s=0.5,
        peer_secret="peer-secret-of-this-test",
    )
    lookup = LazyKeyStore(settings.database_url, settings.identity_schema)
    authenticator = Authenticator(lookup, ttl_s=settings.api_key_cache_ttl_s)
    app = build_app(settings, CollectorRegistry(auto_describe=True), authenticator)
    app.web.init_server()  # faust's own blueprints, as a starting worker adds them
    server = TestServer(app.web.web_app)
    await server.start_server()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    keys = PostgresKeyStore(pool, settings.identity_schema)
    await keys.migrate()
    try:
        async with httpx.AsyncClient(base_url=str(server.make_url("")), timeout=30) as client:
            yield Pages(app, client, keys, authenticator, settings)
    finally:
        await server.close()
        await lookup.close()
        await pool.close()


def routes(app: faust.App) -> list[tuple[str, str, frozenset[Scope]]]:
    """(method, path, scopes) of every page faust's web router serves (HEAD is GET's twin)."""
    found = []
    for route in app.web.web_app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD":
            continue
        view = app.web.views.get(path) or app.web.views.get(path.rstrip("/"))
        handler = view.methods.get(route.method.lower()) if view is not None else None
        found.append((route.method, path, frozenset(getattr(handler, SCOPES_ATTRIBUTE, ()))))
    return found


async def test_every_reconciler_page_answers_401_without_a_key_and_403_without_its_scope(pages: Pages) -> None:
    found = routes(pages.app)
    guarded = [(m, path, scopes) for m, path, scopes in found if (m, path) not in OPEN]
    assert guarded, "the reconciler has business pages"
    assert [(m, path) for m, path, scopes in found if (m, path) in OPEN and scopes] == []
    for method, path, scopes in guarded:
        assert scopes, f"{method} {path} names no scope: add requires(Scope...) or list it in OPEN"
        lacking = await bearer(pages.keys, *(set(Scope) - scopes))
        for headers, status, code in (
            ({}, 401, "unauthenticated"),
            ({"Authorization": "Bearer ck_live_not-a-key"}, 401, "unauthenticated"),
            (lacking, 403, "insufficient_scope"),
        ):
            answer = await pages.client.request(method, concrete(path), headers=headers)
            assert answer.status_code == status, f"{method} {path} with {headers}: {answer.text}"
            assert answer.json()["error"] == code and answer.json()["detail"], f"{method} {path}"


async def test_the_timeline_asks_support_read_and_lets_such_a_key_through_until_it_is_revoked(pages: Pages) -> None:
    assert ("GET", "/v1/orders/{order_id}/timeline", frozenset({Scope.SUPPORT_READ})) in routes(pages.app)
    _, key = await pages.keys.create("support-desk", {Scope.SUPPORT_READ})
    support = {"Authorization": f"Bearer {key}"}
    # Past the key check, a worker that has not joined its group yet says so: not a refusal of the key.
    answer = await pages.client.get("/v1/orders/ord_1/timeline", headers=support)
    assert answer.status_code == 503 and answer.json()["error"] == "not_ready", answer.text
    looked_up = pages.authenticator.looked_up
    for _ in range(3):
        assert (await pages.client.get("/v1/orders/ord_1/timeline", headers=support)).status_code == 503
    assert pages.authenticator.looked_up == looked_up, "the key is read once per cache period, not per request"
    # An order id not in the contract's shape is refused before it goes anywhere (into another worker's address).
    for bad in ("ord%3Frouted=1", "ord%231", "x" * 65):
        answer = await pages.client.get(f"/v1/orders/{bad}/timeline", headers=support)
        assert answer.status_code == 422 and answer.json()["error"] == "invalid_order_id", answer.text
    await pages.keys.revoke("support-desk")

    async def refused() -> bool:
        answer = await pages.client.get("/v1/orders/ord_1/timeline", headers=support)
        return answer.status_code == 401 and "revoked" in answer.json()["detail"]

    await eventually(refused, timeout_s=10, interval_s=0.05)  # within the cache period (0.5 s here)


async def test_a_timeline_asked_with_a_workers_grant_for_that_order_needs_no_key_and_no_other_grant_passes(
    pages: Pages,
) -> None:
    """How one worker asks another for an order it does not have: a grant for that order under the workers' shared
    secret, not the caller's key (which would go to whatever address the consumer group's metadata names)."""
    ours = PeerGrants(pages.settings.peer_secrets())
    # Past the key check, a worker that has not joined its group yet says so: not a refusal of the grant.
    answer = await pages.client.get(
        "/v1/orders/ord_1/timeline", params={"routed": "1"}, headers={PEER_HEADER: ours.grant("ord_1")}
    )
    assert answer.status_code == 503 and answer.json()["error"] == "not_ready", answer.text
    refused = {
        "another order's": ours.grant("ord_2"),
        "another secret's": PeerGrants(["not-our-peer-secret"]).grant("ord_1"),
        "an expired one": PeerGrants(pages.settings.peer_secrets(), now=lambda: time.time() - 60).grant("ord_1"),
        "a malformed one": "soon.beef",
        "an empty one": "",
    }
    for what, grant in refused.items():
        answer = await pages.client.get(
            "/v1/orders/ord_1/timeline", params={"routed": "1"}, headers={PEER_HEADER: grant}
        )
        assert answer.status_code == 401 and answer.json()["error"] == "unauthenticated", (what, answer.text)


async def test_a_peer_grant_with_a_non_ascii_signature_gets_401_in_the_error_body_not_a_server_error(
    pages: Pages,
) -> None:
    """Anyone who reaches the page can send any grant: one that is not ASCII is refused like every bad one (comparing
    it raised, a 500)."""
    grant = "9999999999.\u00e9".encode()
    answer = await pages.client.get("/v1/orders/ord_1/timeline", params={"routed": "1"}, headers={PEER_HEADER: grant})
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "unauthenticated", answer.text
