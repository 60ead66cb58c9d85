"""The HTTP side every service shares: FastAPI with JSON errors that name the problem, /healthz,
/metrics, and a uvicorn server that runs inside the service's own event loop."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request we refuse: the status, a stable machine-readable code, and a sentence for people."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def error_body(code: str, detail: object) -> dict[str, object]:
    return {"error": code, "detail": detail}


def create_app(
    *,
    title: str,
    version: str,
    registry: CollectorRegistry,
    ready: Callable[[], Awaitable[bool]] | None = None,
) -> FastAPI:
    """A FastAPI app with credited's error shape and the operational endpoints."""
    app = FastAPI(title=title, version=version)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.detail), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "problem": e["msg"]} for e in exc.errors()
        ]
        return JSONResponse(error_body("invalid_request", problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.get("/healthz", tags=["operations"], summary="Liveness and readiness")
    async def healthz() -> JSONResponse:
        ok = await ready() if ready is not None else True
        return JSONResponse({"status": "ok" if ok else "starting"}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside a process that owns its signals: SIGTERM stops the whole service, not just HTTP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(app: ASGIApp, host: str, port: int) -> None:
    """Run uvicorn in the current loop until cancelled."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off", loop="none"
    )
    server = EmbeddedServer(config)
    try:
        await server.serve()
    except asyncio.CancelledError:
        server.should_exit = True
        raise
