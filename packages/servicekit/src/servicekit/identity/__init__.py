"""Who may call: scoped API keys (stored hashed in the shared `credited_identity` schema), their cached
lookup, and the FastAPI dependency every business route declares."""

from servicekit.identity.authenticator import Authenticator, KeyLookup, Unauthenticated
from servicekit.identity.guard import KeyRefused, operations, protect, requires, requires_any
from servicekit.identity.keys import Caller, KeyRecord
from servicekit.identity.scopes import Scope, parse_scopes
from servicekit.identity.store import IDENTITY_SCHEMA, KeyNameTaken, PostgresKeyStore

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
