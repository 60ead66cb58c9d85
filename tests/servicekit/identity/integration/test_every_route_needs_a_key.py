"""Least privilege, checked for every route: each operation of each service's API (and payments' fast routes)
answers 401 without a key and 403 with a key lacking its scope, both in credited's error body, before it looks at
what it was asked. A new route fails here until it names its scope, or is added to OPEN with the reason it needs no
key."""

import re
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from fastapi import FastAPI

from ledger.bootstrap import build as build_ledger
from ledger.config import Settings as LedgerSettings
from notifier.bootstrap import build as build_notifier
from payments.bootstrap import build as build_payments
from payments.config import Settings as PaymentsSettings
from servicekit.http import FastPath, FastRoute
from servicekit.identity import Scope, operations
from servicekit.infrastructure import Infrastructure
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.notifier.harness import notifier_settings
from tests.service_settings import settings_for

OPEN = {
    ("GET", "/healthz"): "liveness for load balancers and orchestrators; says only ready or not",
    ("POST", "/v1/psp/{provider}/callbacks"): "authenticated by the provider's signature, not by a key",
    ("GET", "/orders/{order_id}"): "the user's status page: a signed status link (issue 15 item 3)",
    ("GET", "/v1/orders/{order_id}/events"): "the status page's live stream: a signed status link (item 3)",
    ("PUT", "/v1/orders/{order_id}/subscriptions"): "a device of the user a signed status link names (item 3)",
    ("DELETE", "/v1/orders/{order_id}/subscriptions/{subscription_id}"): "the same user's device: a status link",
}
"""What answers without an API key, and why. /metrics is not on the public API at all: it has a port of its own,
for the monitoring network only (servicekit.metrics_server; test_metrics_server shows both ports)."""

ORDER = {"user_id": "u1", "amount": 600, "currency": "CNY", "channel": "alipay"}
BAD_QUERY = {"since": "2026-01-02T00:00:00+00:00", "until": "2026-01-01T00:00:00+00:00", "cursor": "x"}
"""A query a route's own checks would refuse (an empty window, a cursor that is none): the key is checked first."""

Built = tuple[Infrastructure, FastAPI]
Builder = Callable[[Broker, str, str], Awaitable[Built]]


async def payments(broker: Broker, database_url: str, isolation: str) -> Built:
    return await build_payments(
        settings_for(PaymentsSettings, broker, database_url, isolation, psp_secrets={"sim": ["s"]}), connect=False
    )


async def ledger(broker: Broker, database_url: str, isolation: str) -> Built:
    return await build_ledger(settings_for(LedgerSettings, broker, database_url, isolation), connect=False)


async def notifier(broker: Broker, database_url: str, isolation: str) -> Built:
    built = await build_notifier(notifier_settings(broker, database_url, isolation), connect=False)
    return built.infra, built.app


@pytest.fixture(params=[payments, ledger, notifier], ids=["payments", "ledger", "notifier"])
async def service(
    request: pytest.FixtureRequest, broker: Broker, database_url: str, isolation: str
) -> AsyncIterator[Built]:
    builder: Builder = request.param
    infra, app = await builder(broker, database_url, isolation)
    await infra.keys.migrate()  # only the keys: no route below gets past the key check to the rest
    try:
        yield infra, app
    finally:
        await infra.close()


def concrete(template: str) -> str:
    return re.sub(r"{\w+}", "x1", template)


def fast_routes(app: FastAPI) -> list[FastRoute]:
    return [route for m in app.user_middleware if m.cls is FastPath for route in m.kwargs["routes"]]


async def test_every_route_answers_401_without_a_key_and_403_without_its_scope(service: Built) -> None:
    infra, app = service
    guarded = [(m, path, scopes) for path, m, scopes in operations(app) if (m, path) not in OPEN]
    assert guarded, "the service has business routes"
    open_with_scopes = [(m, path) for path, m, scopes in operations(app) if (m, path) in OPEN and scopes]
    assert open_with_scopes == []
    documented = app.openapi()["paths"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        for method, path, scopes in guarded:
            assert scopes, f"{method} {path} names no scope: add requires(Scope...) or list it in OPEN"
            assert documented[path][method.lower()]["x-credited-scopes"] == sorted(scopes)
            url, body = concrete(path), ORDER if method in ("POST", "PUT") else None
            query = BAD_QUERY if method == "GET" else None
            lacking = await bearer(infra.keys, *(set(Scope) - scopes))
            for headers, status, code in (
                ({}, 401, "unauthenticated"),
                ({"Authorization": "Bearer ck_live_not-a-key"}, 401, "unauthenticated"),
                (lacking, 403, "insufficient_scope"),
            ):
                answer = await client.request(method, url, json=body, params=query, headers=headers)
                assert answer.status_code == status, f"{method} {path} with {headers}: {answer.text}"
                assert answer.json()["error"] == code and answer.json()["detail"], f"{method} {path}"


@pytest.mark.parametrize("service", [payments], ids=["payments"], indirect=True)
async def test_the_payments_fast_routes_are_guarded_like_the_app(service: Built) -> None:
    infra, app = service
    assert fast_routes(app), "payments answers its hot routes ahead of FastAPI"
    declared = {(m, path): scopes for path, m, scopes in operations(app)}
    lacking = await bearer(infra.keys, *(set(Scope) - {Scope.ORDERS_WRITE}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        for route in fast_routes(app):
            assert (route.method, route.template) in declared, f"{route.template} is not in the OpenAPI document"
            if (route.method, route.template) in OPEN:
                continue
            assert declared[(route.method, route.template)] == {Scope.ORDERS_WRITE}
            for headers, status in (({}, 401), (lacking, 403)):
                answer = await client.post(concrete(route.template), json=ORDER, headers=headers)
                assert answer.status_code == status, answer.text
                assert answer.json()["error"] in ("unauthenticated", "insufficient_scope")


async def test_the_public_api_has_no_metrics_it_answers_404_in_the_error_shape(service: Built) -> None:
    _, app = service
    assert ("/metrics", "GET") not in {(path, m) for path, m, _ in operations(app)}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 404 and answer.json()["error"] == "not_found", answer.text


# The notifier's test settings are development ones (loopback receivers); it takes the same Authenticator from
# servicekit.infrastructure as these two.
@pytest.mark.parametrize("service", [payments, ledger], ids=["payments", "ledger"], indirect=True)
async def test_outside_development_a_service_refuses_a_development_key_even_with_every_scope(service: Built) -> None:
    infra, app = service
    assert infra.settings.environment == "production"
    _, key = await infra.keys.create("left-by-credited-up", set(Scope), mode="dev")  # as `credited up` makes one
    path = next(path for path, m, _ in operations(app) if m == "GET" and ("GET", path) not in OPEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        answer = await client.get(concrete(path), headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 401, answer.text
    assert answer.json()["detail"] == "a development key (ck_dev_) is accepted only where CREDITED_ENV=development"
