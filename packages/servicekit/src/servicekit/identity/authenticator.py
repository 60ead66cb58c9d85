"""Authenticator: from a bearer key to a Caller, without a database round trip per request.

Each key's record is kept for `ttl_s` seconds (CREDITED_API_KEY_CACHE_TTL_S, 5 by default) after it was
read, then read again: a key revoked in the database is refused by every instance at most `ttl_s` later.
Expiry is checked on every request against the cached record: exact for the expiry a key was created with, but a
rotation shortens the old key's expiry in the database (its overlap), which a cached record learns like a
revocation, at most `ttl_s` later. Unknown keys are remembered
too (a client retrying a bad key costs one lookup per `ttl_s`), the cache is bounded, and concurrent
requests with the same uncached key share one lookup.
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from servicekit.identity.keys import DEVELOPMENT_PREFIX, Caller, KeyRecord, digest, looks_like_key


class KeyLookup(Protocol):
    """Where keys are found by digest (PostgresKeyStore)."""

    async def find(self, key_digest: bytes) -> KeyRecord | None:
        """The stored key with this digest, or None."""
        ...


class Unauthenticated(Exception):
    """No usable key: missing, malformed, unknown, revoked or expired (the reason is for the caller)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(slots=True)
class _Entry:
    record: KeyRecord | None
    read_at: float


class Authenticator:
    """Turns a presented key into the Caller it stands for, or raises Unauthenticated. Development keys (`ck_dev_`,
    made by the local stack) only with `development_keys`: a service outside development refuses them even if one
    is in its key table (a `credited up` pointed at a shared database makes one with every scope)."""

    def __init__(
        self,
        keys: KeyLookup,
        *,
        ttl_s: float = 5.0,
        max_entries: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        development_keys: bool = True,
    ) -> None:
        self._keys = keys
        self._development_keys = development_keys
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._now = now
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._reading: dict[bytes, asyncio.Future[KeyRecord | None]] = {}
        self.served_from_cache = 0
        self.looked_up = 0

    async def authenticate(self, key: str) -> Caller:
        if not looks_like_key(key):
            raise Unauthenticated("key_invalid", "the bearer value is not a credited API key")
        if not self._development_keys and key.startswith(DEVELOPMENT_PREFIX):
            raise Unauthenticated(
                "key_invalid", "a development key (ck_dev_) is accepted only where CREDITED_ENV=development"
            )
        record = await self._record(digest(key))
        if record is None:
            raise Unauthenticated("key_invalid", "unknown API key")
        refusal = record.refusal(self._now())
        if refusal is not None:
            raise Unauthenticated("key_invalid", refusal)
        return Caller.of(record)

    async def _record(self, key_digest: bytes) -> KeyRecord | None:
        entry = self._entries.get(key_digest)
        if entry is not None and self._monotonic() - entry.read_at < self._ttl_s:
            self._entries.move_to_end(key_digest)
            self.served_from_cache += 1
            return entry.record
        pending = self._reading.get(key_digest)
        if pending is not None:
            self.served_from_cache += 1
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request was cancelled, not the shared lookup
                # The request that was looking it up was cancelled: look it up for this one.
        return await self._read(key_digest)

    async def _read(self, key_digest: bytes) -> KeyRecord | None:
        future: asyncio.Future[KeyRecord | None] = asyncio.get_running_loop().create_future()
        self._reading[key_digest] = future
        try:
            self.looked_up += 1
            record = await self._keys.find(key_digest)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: only the waiters, if any, raise it again
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._reading[key_digest]
        future.set_result(record)
        self._remember(key_digest, record)
        return record

    def _remember(self, key_digest: bytes, record: KeyRecord | None) -> None:
        self._entries[key_digest] = _Entry(record, self._monotonic())
        self._entries.move_to_end(key_digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def forget_all(self) -> None:
        """Drop every remembered key (a revocation made by this process takes effect at once)."""
        self._entries.clear()
