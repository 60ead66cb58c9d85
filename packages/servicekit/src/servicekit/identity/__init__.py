"""Who may call: scoped API keys (stored hashed in the shared `credited_identity` schema), their cached
lookup, and the FastAPI dependency every business route declares.

The FastAPI side (servicekit.identity.guard) loads on first use: the reconciler's worker and the `credited`
command read keys without a web framework, and importing FastAPI costs over a second of CPU at every start."""

from typing import TYPE_CHECKING, Any

from servicekit.identity.authenticator import Authenticator, KeyLookup, Unauthenticated
from servicekit.identity.keys import Caller, KeyRecord
from servicekit.identity.scopes import Scope, parse_scopes
from servicekit.identity.store import IDENTITY_SCHEMA, KeyNameTaken, PostgresKeyStore

if TYPE_CHECKING:
    from servicekit.identity.guard import KeyRefused, operations, protect, requires, requires_any

_GUARD = frozenset({"KeyRefused", "operations", "protect", "requires", "requires_any"})

__all__ = [
    "IDENTITY_SCHEMA",
    "Authenticator",
    "Caller",
    "KeyLookup",
    "KeyNameTaken",
    "KeyRecord",
    "KeyRefused",
    "PostgresKeyStore",
    "Scope",
    "Unauthenticated",
    "operations",
    "parse_scopes",
    "protect",
    "requires",
    "requires_any",
]


def __getattr__(name: str) -> Any:
    if name in _GUARD:
        from servicekit.identity import guard

        return getattr(guard, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
