"""schemathesis against a service's own OpenAPI spec, with the service served on loopback over real HTTP.

The service runs in a thread with its own event loop (its database pool and Kafka producer live there), so
schemathesis' synchronous client talks to it as any client would. Every operation gets valid and invalid
requests; a 5xx, a status the spec does not declare, or a body or content type outside the spec fails.
Requests carry the API key the test passes, as a client's would: schemathesis is told it is the bearer token of
the spec's security scheme, so its negative cases still send requests without it (and expect the 401).
"""

import asyncio
import contextlib
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config._auth import AuthConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from credited.stack.processes import free_port
from servicekit.http import serve
from servicekit.identity.guard import bearer

BEARER_SCHEME = bearer.scheme_name

App = Callable[[], Awaitable[tuple[FastAPI, Callable[[], Awaitable[None]]]]]
"""Builds the service's app in the serving loop; returns it with the coroutine that releases it."""

CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@contextlib.contextmanager
def served(build: App, timeout_s: float = 60) -> Iterator[str]:
    """The app built by `build`, served on a free loopback port in its own thread; yields the base URL."""
    port = free_port()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        app, close = await build()
        state["loop"] = asyncio.get_running_loop()
        state["task"] = asyncio.current_task()
        server = asyncio.create_task(serve(app, "127.0.0.1", port))
        try:
            await asyncio.sleep(0.3)  # uvicorn binds on its first iteration; the schema request retries too
            ready.set()
            await server
        finally:
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)
            await close()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            state["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, name=f"served-{port}", daemon=True)
    thread.start()
    assert ready.wait(timeout_s), "the service did not start"
    if "error" in state:
        raise state["error"]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        state["loop"].call_soon_threadsafe(state["task"].cancel)
        thread.join(timeout_s)


def fuzz(
    base_url: str, *, max_examples: int, skip_paths: tuple[str, ...] = (), api_key: str | None = None
) -> list[str]:
    """Every operation with `max_examples` valid and as many invalid requests; the failures, described."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", wait_for_schema=30)
    if api_key is not None:
        schema.config.auth = AuthConfig(openapi={BEARER_SCHEME: {"bearer": api_key}})
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in skip_paths:
            continue
        # Besides what schemathesis generates: every path parameter with a NUL, which PostgreSQL text refuses.
        nul = dict.fromkeys(re.findall(r"{(\w+)}", operation.path), "x\x00")
        runs = [(GenerationMode.POSITIVE, {}, max_examples), (GenerationMode.NEGATIVE, {}, max_examples)]
        runs += [(GenerationMode.POSITIVE, nul, 3)] if nul else []
        for mode, path_parameters, examples in runs:
            statuses: list[int] = []
            try:
                _checker(operation, mode, base_url, examples, path_parameters, statuses)()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # an operation without inputs has no invalid request
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - every operation is tried, all reported
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}")
            if mode is GenerationMode.POSITIVE and statuses and set(statuses) <= {401, 403}:
                # Valid requests that never got past the key check tested nothing behind it.
                failures.append(f"{operation.method.upper()} {operation.path}: every valid request was refused")
    return failures


def _checker(
    operation: Any,
    mode: GenerationMode,
    base_url: str,
    max_examples: int,
    path_parameters: dict[str, str],
    statuses: list[int],
) -> Callable[[], None]:
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters or None))
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        statuses.append(case.call_and_validate(base_url=base_url, checks=checks, timeout=10).status_code)

    return check  # type: ignore[no-any-return]
