"""The HTTP side every service shares: FastAPI with JSON errors that name the problem, /healthz, request
metrics by route template. The uvicorn server inside the service's own event loop is servicekit.serving; /metrics
is not here: it has a port of its own (servicekit.metrics_server)."""

import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit.errors import classify
from servicekit.errors import error_body as error_body  # re-exported: services import it from here
from servicekit.limits import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from servicekit.metrics import ServiceMetrics
from servicekit.retrying import Readiness
from servicekit.serving import EmbeddedServer as EmbeddedServer  # re-exported: callers import them from here
from servicekit.serving import serve as serve

log = logging.getLogger(__name__)

STORABLE_TEXT = r"^[^\x00]*$"
"""The pattern of free text a request stores (a reason, a note, a push endpoint): anything PostgreSQL's text takes,
which is anything but NUL. Without it a NUL reaches the database and the request fails 500, not 422."""


class ApiError(Exception):
    """A request we refuse: the status, a stable machine-readable code, and a sentence for people."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


class JsonResponse(JSONResponse):
    """A JSON response serialised by orjson (the same compact UTF-8 bytes as Starlette's, several times faster)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ErrorBody(BaseModel):
    """Every refusal: a stable machine-readable code and what is wrong, for people (or a list of problems)."""

    error: str
    detail: Any


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses an operation may answer, all in credited's shape."""
    return {code: {"model": ErrorBody, "description": HTTPStatus(code).phrase} for code in codes}


def create_app(
    *,
    title: str,
    version: str,
    registry: CollectorRegistry,
    ready: Callable[[], Awaitable[bool]] | None = None,
    readiness: Readiness | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """A FastAPI app with credited's error shape and the operational endpoints. When the service's
    metrics were built on `registry` (servicekit.infrastructure does that), every request is counted. With
    `readiness`, /healthz answers 503 naming each dependency (database, broker) the service waits for.
    Bodies over `max_body_bytes` get 413 ahead of every middleware, those added later included (FastPath)."""
    # Metrics are Prometheus (below); FastAPI's OpenTelemetry hooks would look for providers on every request.
    app = _Limited(
        title=title, version=version, telemetry={"tracing": False, "metrics": False, "logs": False}
    ).limited_to(max_body_bytes)
    _declare_credited_errors(app)
    app.add_middleware(DependencyAwayAnswers)  # inside RequestMetrics (added after it), which so counts the 503
    service_metrics = ServiceMetrics.on(registry)
    if service_metrics is not None:
        app.add_middleware(RequestMetrics, metrics=service_metrics)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JsonResponse:
        return JsonResponse(error_body(exc.code, exc.detail), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JsonResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "problem": e["msg"]} for e in exc.errors()
        ]
        return JsonResponse(error_body("invalid_request", problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JsonResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JsonResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JsonResponse:
        # Starlette answers with this and raises the exception again (uvicorn logs its traceback): a server error.
        # A dependency away is answered before (DependencyAwayAnswers); this is for one raised past it.
        return unavailable(exc) or JsonResponse(
            error_body("internal_error", "the server failed; it is logged"), status_code=500
        )

    @app.get("/healthz", tags=["operations"], summary="Liveness and readiness")
    async def healthz() -> JsonResponse:
        ok = await ready() if ready is not None else True
        if readiness is None:
            return JsonResponse({"status": "ok" if ok else "starting"}, status_code=200 if ok else 503)
        status, body = readiness.health(ok)
        return JsonResponse(body, status_code=status)

    return app


class _Limited(FastAPI):
    """FastAPI with the body size limit outside its whole middleware stack: a middleware added after the app
    is built (payments' FastPath reads whole bodies itself) still sits inside the limit, and cannot undo it."""

    max_body_bytes = DEFAULT_MAX_BODY_BYTES

    def limited_to(self, max_bytes: int) -> "_Limited":
        self.max_body_bytes = max_bytes
        return self

    def build_middleware_stack(self) -> ASGIApp:
        return BodySizeLimit(super().build_middleware_stack(), max_bytes=self.max_body_bytes)


def _declare_credited_errors(app: FastAPI) -> None:
    """Make the OpenAPI spec say what the app answers: every 422 in credited's error shape (not FastAPI's
    default HTTPValidationError, which our handler replaces), a 400 wherever a body may fail to parse, and a
    413 wherever one may be too large."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for operation in (op for path in schema.get("paths", {}).values() for op in path.values()):
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"]["content"] = error
            if "requestBody" in operation and "400" not in responses:
                responses["400"] = {"description": HTTPStatus(400).phrase, "content": error}
            if "requestBody" in operation and "413" not in responses:  # servicekit.limits.BodySizeLimit
                responses["413"] = {"description": HTTPStatus(413).phrase, "content": error}
        for default in ("HTTPValidationError", "ValidationError"):
            schemas.pop(default, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def unavailable(exc: BaseException) -> JsonResponse | None:
    """The 503 for a request that failed because the database or the broker is away (the client may try again
    shortly), or None for any other failure."""
    verdict = classify(exc)
    if not (verdict.transient and verdict.dependency is not None):
        return None
    detail = f"the {verdict.dependency} is away ({verdict.reason}); try again"
    return JsonResponse(error_body("unavailable", detail), status_code=503, headers={"Retry-After": "1"})


class DependencyAwayAnswers:
    """Answers 503 (Retry-After) a request whose handling raised because the database or the broker is away, with
    one warning line. Left to Starlette's error handler, every such request was answered 503 but raised again: the
    request metrics counted a 500 and uvicorn logged a whole traceback for each, so a minute's failover filled the
    logs and the 5xx graphs with server errors that were none. Any other exception goes on as before (500)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def noting(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, receive, noting)
        except Exception as exc:
            answer = unavailable(exc)
            if answer is None or started:
                raise
            log.warning("%s %s answered 503: %s", scope["method"], scope["path"], _one_line(exc))
            await answer(scope, receive, send)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


class RequestMetrics:
    """Counts and times every request by its route template (`/v1/orders/{order_id}`), never the raw
    path: an order id in a label would make a new series per order."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self._metrics.http_request(route, method, status, time.perf_counter() - started)


Answer = tuple[int, bytes]
"""A status code and a JSON body."""


@dataclass(frozen=True)
class FastRoute:
    """A hot route answered without the framework's routing, dependency injection and response models.
    `answer` gets the path's match, the request headers and the whole body, and returns the answer, or None
    for anything but a plain valid request: the app then answers it as always (its errors stay the same)."""

    method: str
    path: re.Pattern[str]
    template: str
    answer: Callable[[re.Match[str], Headers, bytes], Awaitable[Answer | None]]


class FastPath:
    """ASGI middleware in front of the app for a few hot routes (see FastRoute). It counts what it answers
    itself in the request metrics; what it hands on is counted by the app's own RequestMetrics."""

    def __init__(self, app: ASGIApp, routes: Sequence[FastRoute], metrics: ServiceMetrics | None = None) -> None:
        self._app = app
        self._routes = routes
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route, match = self._match(scope)
        if route is None or match is None:
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        body = await _whole_body(receive)
        if body is None:
            return  # the client went away before it finished sending
        try:
            answer = await route.answer(match, Headers(scope=scope), body)
        except Exception as exc:
            away = unavailable(exc)
            if away is None:
                self._count(route, 500, started)
                raise
            log.warning("%s %s answered 503: %s", route.method, scope["path"], _one_line(exc))
            await away(scope, receive, send)
            self._count(route, 503, started)
            return
        except BaseException:
            self._count(route, 500, started)
            raise
        if answer is None:
            await self._app(scope, _replay(body, receive), send)
            return
        status, payload = answer
        await send({"type": "http.response.start", "status": status, "headers": _json_headers(payload)})
        await send({"type": "http.response.body", "body": payload})
        self._count(route, status, started)

    def _count(self, route: FastRoute, status: int, started: float) -> None:
        if self._metrics is not None:
            self._metrics.http_request(route.template, route.method, status, time.perf_counter() - started)

    def _match(self, scope: Scope) -> tuple[FastRoute | None, re.Match[str] | None]:
        if scope["type"] != "http":
            return None, None
        for route in self._routes:
            if scope["method"] == route.method:
                match = route.path.fullmatch(scope["path"])
                if match is not None:
                    return route, match
        return None, None


def _json_headers(payload: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-length", str(len(payload)).encode()), (b"content-type", b"application/json")]


async def _whole_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The request's body again for the app, then whatever comes after it (a disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
