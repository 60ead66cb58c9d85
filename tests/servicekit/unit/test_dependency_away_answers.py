"""A request that fails because the database is away is answered 503 with Retry-After, counted as a 503 and logged
as one line, by a FastAPI route and by a fast route alike; any other failure stays a 500 with its traceback.
The exceptions are asyncpg's own, classified by servicekit.errors as a running service's are."""

import logging
import re

import asyncpg
import httpx
import pytest
from fastapi import APIRouter
from prometheus_client import CollectorRegistry
from starlette.datastructures import Headers

from servicekit.http import FastPath, FastRoute, create_app
from servicekit.metrics import ServiceMetrics

FAILURES: dict[str, Exception] = {
    "away": asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
    "bug": ZeroDivisionError("division by zero"),
}


def app(registry: CollectorRegistry) -> httpx.AsyncClient:
    metrics = ServiceMetrics("payments", registry)
    application = create_app(title="t", version="1", registry=registry)
    router = APIRouter()

    @router.get("/v1/orders/{order_id}")
    async def get_order(order_id: str) -> dict[str, str]:
        raise FAILURES[order_id]

    async def place(match: re.Match[str], headers: Headers, body: bytes) -> tuple[int, bytes]:
        raise FAILURES[body.decode()]

    application.include_router(router)
    fast = FastRoute("POST", re.compile("/v1/orders"), "/v1/orders", place)
    application.add_middleware(FastPath, routes=[fast], metrics=metrics)
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://svc")


def counted(registry: CollectorRegistry, route: str, method: str, code: str) -> float | None:
    labels = {"service": "payments", "route": route, "method": method, "code": code}
    return registry.get_sample_value("credited_http_requests_total", labels)


@pytest.mark.parametrize(("method", "path", "route"), [("GET", "/v1/orders/away", "/v1/orders/{order_id}"),
                                                       ("POST", "/v1/orders", "/v1/orders")])  # fmt: skip
async def test_a_request_failing_because_the_database_is_away_is_a_503_counted_as_one_and_logged_in_a_line(
    method: str, path: str, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    async with app(registry) as client:
        answer = await client.request(method, path, content=b"away")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert answer.json()["error"] == "unavailable" and "database" in answer.json()["detail"]
    assert counted(registry, route, method, "503") == 1 and counted(registry, route, method, "500") is None
    (line,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.levelno == logging.WARNING and line.exc_info is None
    assert (
        line.getMessage()
        == f"{method} {path} answered 503: CannotConnectNowError: the database system is shutting down"
    )


@pytest.mark.parametrize(("method", "path", "route"), [("GET", "/v1/orders/bug", "/v1/orders/{order_id}"),
                                                       ("POST", "/v1/orders", "/v1/orders")])  # fmt: skip
async def test_a_request_failing_for_any_other_reason_is_still_a_500_and_raised_for_its_traceback(
    method: str, path: str, route: str
) -> None:
    registry = CollectorRegistry()
    async with app(registry) as client:
        answer = await client.request(method, path, content=b"bug")
    assert answer.status_code == 500 and answer.json()["error"] == "internal_error"
    assert counted(registry, route, method, "500") == 1
