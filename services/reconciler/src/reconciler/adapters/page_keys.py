"""Who may read the reconciler's pages: API keys from the store every service reads (servicekit.identity).

The reconciler keeps no data in PostgreSQL; it reads the keys there (DATABASE_URL, the schema
CREDITED_IDENTITY_SCHEMA) through servicekit's cached Authenticator, so a page costs no database round trip
per request and a revoked key is refused within CREDITED_API_KEY_CACHE_TTL_S. The pool is opened at the first
lookup, in the worker's own event loop (faust builds the app before that loop runs). A page names its scope
with `requires` (kept on the handler, where the test that enumerates faust's routes reads it) and answers 401
or 403 in credited's error body before it does anything else.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from faust.web import Request, Response, View

from reconciler.adapters.peers import PEER_HEADER, PeerGrants
from servicekit.errors import error_body
from servicekit.identity import Authenticator, PostgresKeyStore, Scope, Unauthenticated
from servicekit.identity.keys import KeyRecord
from servicekit.identity.scopes import SCOPES_ATTRIBUTE
from servicekit.postgres import lazy_pool

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Response]]


class LazyKeyStore:
    """The shared key store over a small pool opened (and the key schema migrated) at the first lookup."""

    def __init__(self, database_url: str, schema: str) -> None:
        self._database_url = database_url
        self._schema = schema
        self._store: PostgresKeyStore | None = None
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def find(self, key_digest: bytes) -> KeyRecord | None:
        return await (await self._opened()).find(key_digest)

    async def _opened(self) -> PostgresKeyStore:
        async with self._opening:
            if self._store is None:
                if self._pool is None:
                    self._pool = await lazy_pool(self._database_url, self._schema, max_size=2)
                store = PostgresKeyStore(self._pool, self._schema)
                await store.migrate()  # the keys' schema may not exist yet when the reconciler starts first
                self._store = store
            return self._store

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool, self._store = None, None


def requires(
    scope: Scope, authenticator: Authenticator, *, peers: PeerGrants | None = None
) -> Callable[[Handler], Handler]:
    """A faust view method that answers only a caller whose `Authorization: Bearer` key holds `scope`; with `peers`,
    also another worker of this reconciler asking with a grant for the page's `order_id` (a timeline that worker
    was asked for and checked the caller's key for itself)."""

    def decorate(handler: Handler) -> Handler:
        async def guarded(view: View, request: Request, **kwargs: Any) -> Response:
            if peers is not None and PEER_HEADER in request.headers:
                if peers.admits(request.headers[PEER_HEADER], str(kwargs.get("order_id", ""))):
                    return await handler(view, request, **kwargs)
                detail = "the peer grant is not for this order, not ours, or expired"
                return view.json(error_body("unauthenticated", detail), status=401)
            refused = await refusal(authenticator, request, scope)
            if refused is not None:
                status, body, headers = refused
                return view.json(body, status=status, headers=headers)
            return await handler(view, request, **kwargs)

        guarded.__doc__ = handler.__doc__
        setattr(guarded, SCOPES_ATTRIBUTE, frozenset({scope}))
        return guarded

    return decorate


async def refusal(
    authenticator: Authenticator, request: Request, scope: Scope
) -> tuple[int, dict[str, Any], dict[str, str]] | None:
    """(status, error body, headers) of the 401 or 403 this request gets, or None when its key holds `scope`."""
    challenge = {"WWW-Authenticate": 'Bearer realm="credited"'}
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return 401, error_body("unauthenticated", "send an API key as `Authorization: Bearer <key>`"), challenge
    try:
        caller = await authenticator.authenticate(key.strip())
    except Unauthenticated as exc:
        return 401, error_body("unauthenticated", exc.detail), challenge
    except (OSError, asyncpg.PostgresError) as exc:
        log.warning("API keys cannot be read: %s", exc)
        return 503, error_body("unavailable", "API keys cannot be checked now; ask again shortly"), {"Retry-After": "1"}
    if scope not in caller.scopes:
        return 403, error_body("insufficient_scope", f"this key lacks the scope {scope.value}"), {}
    return None
