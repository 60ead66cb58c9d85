"""The HTTP side of API keys: `requires(Scope.X)` on a route, `protect(app, authenticator)` on the app.

    @router.post("/v1/orders")
    async def place(body: ..., caller: Annotated[Caller, Depends(requires(Scope.ORDERS_WRITE))]) -> ...

answers 401 `unauthenticated` without a usable `Authorization: Bearer <key>` (with `WWW-Authenticate:
Bearer`), 403 `insufficient_scope` when the key lacks a scope, both in credited's error body, and hands the
route the Caller (key id and name) otherwise. `protect` declares those answers, the bearer scheme and each
operation's scopes (`x-credited-scopes`) in the OpenAPI spec, so what a route needs is visible to clients
and to the test that checks every route asks for a key.
"""

from collections.abc import Awaitable, Callable, Iterator
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from servicekit.http import ApiError, error_body
from servicekit.identity.authenticator import Authenticator, Unauthenticated
from servicekit.identity.keys import Caller
from servicekit.identity.scopes import SCOPES_ATTRIBUTE, Scope

OPENAPI_SCOPES = "x-credited-scopes"

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="A credited API key (`credited keys create`): `Authorization: Bearer ck_live_...`.",
)


class KeyRefused(ApiError):
    """401 or 403 in credited's error shape; a 401 also tells the client which scheme to use."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(status, code, detail)
        self.headers = {"WWW-Authenticate": 'Bearer realm="credited"'} if status == 401 else {}


def requires(*scopes: Scope) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the Caller whose key holds every one of `scopes`, or a 401/403 answer."""
    return _guard(frozenset(scopes), every=True)


def requires_any(*scopes: Scope) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the Caller whose key holds at least one of `scopes` (a read that serves two kinds of
    caller, say orders:read for platform backends and support:read for support staff), or a 401/403 answer."""
    return _guard(frozenset(scopes), every=False)


def _guard(needed: frozenset[Scope], *, every: bool) -> Callable[..., Awaitable[Caller]]:
    if not needed:
        raise ValueError("requires() needs at least one scope")

    async def caller(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Caller:
        if credentials is None:
            raise KeyRefused(401, "unauthenticated", "send an API key as `Authorization: Bearer <key>`")
        authenticator: Authenticator = request.app.state.authenticator
        try:
            found = await authenticator.authenticate(credentials.credentials)
        except Unauthenticated as exc:
            raise KeyRefused(401, "unauthenticated", exc.detail) from None
        missing = sorted(needed - found.scopes)
        if missing and (every or len(missing) == len(needed)):
            lacks = ", ".join(missing) if every else f"one of {', '.join(missing)}"
            raise KeyRefused(403, "insufficient_scope", f"this key lacks the scope {lacks}")
        return found

    setattr(caller, SCOPES_ATTRIBUTE, needed)
    return caller


def protect(app: FastAPI, authenticator: Authenticator) -> None:
    """Let `requires` find the authenticator, answer refusals with their header, and document them."""
    app.state.authenticator = authenticator

    async def refused(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, KeyRefused)
        return JSONResponse(error_body(exc.code, exc.detail), status_code=exc.status, headers=exc.headers)

    app.add_exception_handler(KeyRefused, refused)
    _document(app)


def operations(app: FastAPI) -> Iterator[tuple[str, str, frozenset[Scope]]]:
    """(path template, method, scopes required) of every operation of the app, open ones with no scopes;
    routers included with a prefix appear under their full path."""
    for route in iter_route_contexts(app.routes):
        dependant: Dependant | None = getattr(route, "dependant", None)
        if dependant is None or route.path_format is None:
            continue  # a plain Starlette route: the docs pages, no operation
        scopes = frozenset(s for call in _calls(dependant) for s in getattr(call, SCOPES_ATTRIBUTE, ()))
        for method in sorted(route.methods or ()):
            yield route.path_format, method, scopes


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _document(app: FastAPI) -> None:
    generate = app.openapi
    documented = False

    def openapi() -> dict[str, Any]:
        nonlocal documented
        schema = generate()
        if documented:
            return schema
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        paths = schema.get("paths", {})
        for path, method, scopes in operations(app):
            operation = paths.get(path, {}).get(method.lower())
            if operation is None or not scopes:
                continue
            operation[OPENAPI_SCOPES] = sorted(scopes)
            responses = operation.setdefault("responses", {})
            for status in (401, 403):
                responses.setdefault(str(status), {"description": HTTPStatus(status).phrase, "content": error})
        documented = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
