"""`requires(scope)` on a route: 401 without a usable key, 403 without the scope, both in credited's error
body and declared in OpenAPI; the route gets the caller; /healthz stays open."""

from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from prometheus_client import CollectorRegistry

from servicekit.http import create_app
from servicekit.identity import Authenticator, Caller, Scope, operations, protect, requires, requires_any
from servicekit.identity.guard import OPENAPI_SCOPES
from tests.servicekit.identity.fakes import Clocks, InMemoryKeys


def build(keys: InMemoryKeys) -> FastAPI:
    app = create_app(title="guarded", version="1", registry=CollectorRegistry())
    router = APIRouter()

    @router.post("/v1/orders/{order_id}/review")
    async def decide(
        order_id: str, caller: Annotated[Caller, Depends(requires(Scope.REVIEW_DECIDE))]
    ) -> dict[str, str]:
        return {"order_id": order_id, "decided_by": caller.key_id, "name": caller.name}

    @router.get("/v1/support/orders/{order_id}")
    async def look_up(
        order_id: str, _: Annotated[Caller, Depends(requires(Scope.SUPPORT_READ, Scope.ORDERS_READ))]
    ) -> dict[str, str]:
        return {"order_id": order_id}

    app.include_router(router)
    clocks = Clocks()
    protect(app, Authenticator(keys, monotonic=clocks.monotonic, now=clocks.now))
    return app


@pytest.fixture
def keys() -> InMemoryKeys:
    return InMemoryKeys()


@pytest.fixture
async def client(keys: InMemoryKeys):  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=build(keys))
    async with httpx.AsyncClient(transport=transport, base_url="http://guarded") as http:
        yield http


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_no_key_is_a_401_with_the_bearer_challenge_in_credited_shape(client: httpx.AsyncClient) -> None:
    answer = await client.post("/v1/orders/ord_1/review")
    assert answer.status_code == 401
    assert answer.json() == {
        "error": "unauthenticated",
        "detail": "send an API key as `Authorization: Bearer <key>`",
    }
    assert answer.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    ["Bearer ck_live_" + "x" * 40, "Bearer not-a-key", "Basic dXNlcjpwYXNz", "ck_live_" + "x" * 40],
)
async def test_an_unknown_malformed_or_non_bearer_key_is_a_401(client: httpx.AsyncClient, header: str) -> None:
    answer = await client.post("/v1/orders/ord_1/review", headers={"Authorization": header})
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthenticated"


async def test_a_key_without_the_scope_is_a_403_naming_the_missing_scope(
    client: httpx.AsyncClient, keys: InMemoryKeys
) -> None:
    _, key = keys.add("platform-backend", Scope.ORDERS_WRITE, Scope.ORDERS_READ)
    answer = await client.post("/v1/orders/ord_1/review", headers=bearer(key))
    assert answer.status_code == 403
    assert answer.json() == {"error": "insufficient_scope", "detail": "this key lacks the scope review:decide"}
    assert "www-authenticate" not in answer.headers


async def test_a_route_needing_two_scopes_refuses_a_key_with_one_of_them(
    client: httpx.AsyncClient, keys: InMemoryKeys
) -> None:
    _, key = keys.add("support-agent", Scope.SUPPORT_READ)
    answer = await client.get("/v1/support/orders/ord_1", headers=bearer(key))
    assert (answer.status_code, answer.json()["detail"]) == (403, "this key lacks the scope orders:read")


async def test_a_key_with_the_scope_reaches_the_route_which_knows_who_called(
    client: httpx.AsyncClient, keys: InMemoryKeys
) -> None:
    record, key = keys.add("risk-team", Scope.REVIEW_DECIDE)
    answer = await client.post("/v1/orders/ord_1/review", headers=bearer(key))
    assert answer.status_code == 200
    assert answer.json() == {"order_id": "ord_1", "decided_by": record.id, "name": "risk-team"}


async def test_healthz_stays_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200


async def test_openapi_declares_the_bearer_scheme_the_scopes_and_the_401_and_403_answers(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    review = spec["paths"]["/v1/orders/{order_id}/review"]["post"]
    assert review["security"] == [{"ApiKey": []}]
    assert review[OPENAPI_SCOPES] == ["review:decide"]
    for status in ("401", "403"):
        schema = review["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}
    support = spec["paths"]["/v1/support/orders/{order_id}"]["get"]
    assert support[OPENAPI_SCOPES] == ["orders:read", "support:read"]
    health = spec["paths"]["/healthz"]["get"]
    assert OPENAPI_SCOPES not in health and "401" not in health["responses"]


def test_operations_lists_every_operation_with_the_scopes_its_dependencies_require(keys: InMemoryKeys) -> None:
    found = {(path, method): scopes for path, method, scopes in operations(build(keys))}
    assert found == {
        ("/healthz", "GET"): frozenset(),
        ("/v1/orders/{order_id}/review", "POST"): {Scope.REVIEW_DECIDE},
        ("/v1/support/orders/{order_id}", "GET"): {Scope.SUPPORT_READ, Scope.ORDERS_READ},
    }


async def test_a_route_accepting_either_scope_lets_each_in_and_refuses_a_key_with_neither(keys: InMemoryKeys) -> None:
    app = create_app(title="either", version="1", registry=CollectorRegistry())

    @app.get("/v1/orders/{order_id}/entries")
    async def entries(
        order_id: str, caller: Annotated[Caller, Depends(requires_any(Scope.ORDERS_READ, Scope.SUPPORT_READ))]
    ) -> dict[str, str]:
        return {"order_id": order_id, "name": caller.name}

    clocks = Clocks()
    protect(app, Authenticator(keys, monotonic=clocks.monotonic, now=clocks.now))
    _, backend = keys.add("platform-backend", Scope.ORDERS_READ)
    _, agent = keys.add("support-agent", Scope.SUPPORT_READ)
    _, wallets = keys.add("wallet-reader", Scope.WALLETS_READ)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://either") as http:
        answers = [await http.get("/v1/orders/o1/entries", headers=bearer(k)) for k in (backend, agent, wallets)]
    assert [a.status_code for a in answers] == [200, 200, 403]
    assert [a.json()["name"] for a in answers[:2]] == ["platform-backend", "support-agent"]
    assert answers[2].json()["detail"] == "this key lacks the scope one of orders:read, support:read"
    assert {scopes for path, _, scopes in operations(app) if path.endswith("/entries")} == {
        frozenset({Scope.ORDERS_READ, Scope.SUPPORT_READ})
    }
