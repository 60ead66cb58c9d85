"""PostgresKeyStore: API keys in one schema every service reads (`credited_identity`), whatever its own schema.

Every statement names the schema, so any service's pool works; the schema's migrations are applied with
their own ledger of what ran, apart from the services' (they never get an outbox table here).
"""

import logging
import re
import zlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg

from servicekit.identity.keys import KeyMode, KeyRecord, digest, display_prefix, mint_key, mode_of, new_key_id
from servicekit.identity.scopes import Scope

log = logging.getLogger(__name__)

IDENTITY_SCHEMA = "credited_identity"
MIGRATIONS = Path(__file__).parent / "migrations"
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_COLUMNS = "id, name, prefix, scopes, created_at, expires_at, revoked_at, rotated_at"


class KeyNameTaken(Exception):
    """Another live key already has this name."""


class PostgresKeyStore:
    """Creates, rotates, lists, revokes and finds API keys; `round_trips` counts the lookups that reached the
    database."""

    def __init__(self, pool: asyncpg.Pool, schema: str = IDENTITY_SCHEMA) -> None:
        if not _SCHEMA.match(schema):
            raise ValueError(f"not a schema name: {schema!r}")
        self._pool = pool
        self._schema = schema
        table, ledger = f'"{schema}".api_keys', f'"{schema}".schema_migrations'
        # The schema name is checked above; everything else in these statements is a constant.
        self._sql = {
            "ledger": f"CREATE TABLE IF NOT EXISTS {ledger} (name text PRIMARY KEY, applied_at timestamptz NOT NULL"
            " DEFAULT now())",
            "done": f"SELECT name FROM {ledger}",  # noqa: S608
            "applied": f"INSERT INTO {ledger} (name) VALUES ($1)",  # noqa: S608
            "create": f"INSERT INTO {table} (id, name, prefix, digest, scopes, expires_at)"  # noqa: S608
            f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
            "all": f"SELECT {_COLUMNS} FROM {table} ORDER BY created_at, id",  # noqa: S608
            "live": f"SELECT {_COLUMNS} FROM {table} WHERE revoked_at IS NULL ORDER BY created_at, id",  # noqa: S608
            # One key: the one with that id, else the current one with that name (a name may be another key's id;
            # a rotated key of that name, still accepted until it expires, goes by its id).
            "revoke": f"UPDATE {table} SET revoked_at = now() WHERE id = (SELECT id FROM {table}"  # noqa: S608
            f" WHERE revoked_at IS NULL AND (id = $1 OR (name = $1 AND rotated_at IS NULL))"
            f" ORDER BY id = $1 DESC LIMIT 1) RETURNING {_COLUMNS}",
            # Locked, so a second rotation at the same time waits and then finds no current key.
            "current": f"SELECT id, prefix, scopes, created_at, expires_at FROM {table}"  # noqa: S608
            " WHERE name = $1 AND revoked_at IS NULL AND rotated_at IS NULL FOR UPDATE",
            # LEAST ignores NULL: a key that never expired now expires when the overlap ends.
            "rotated": f"UPDATE {table} SET rotated_at = now(), expires_at = LEAST(expires_at, now() + $2::interval)"  # noqa: S608
            f" WHERE id = $1 RETURNING {_COLUMNS}",
            "successor": f"INSERT INTO {table} (id, name, prefix, digest, scopes, expires_at)"  # noqa: S608
            f" VALUES ($1, $2, $3, $4, $5, COALESCE($6::timestamptz, now() + $7::interval)) RETURNING {_COLUMNS}",
            "find": f"SELECT {_COLUMNS} FROM {table} WHERE digest = $1",  # noqa: S608
        }
        self.round_trips = 0

    async def migrate(self) -> list[str]:
        """Create the schema and apply its migrations not applied yet; safe when services start together."""
        lock = zlib.crc32(f"migrate:{self._schema}".encode())
        applied: list[str] = []
        async with self._pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", lock)
            try:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
                await conn.execute(self._sql["ledger"])
                done = {r["name"] for r in await conn.fetch(self._sql["done"])}
                for path in sorted(MIGRATIONS.glob("[0-9]*.sql")):
                    if path.name in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(f'SET LOCAL search_path TO "{self._schema}"')
                        await conn.execute(path.read_text())
                        await conn.execute(self._sql["applied"], path.name)
                    log.info("applied identity migration %s in schema %s", path.name, self._schema)
                    applied.append(path.name)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", lock)
        return applied

    async def create(
        self, name: str, scopes: Iterable[Scope], *, expires_at: datetime | None = None, mode: KeyMode = "live"
    ) -> tuple[KeyRecord, str]:
        """A new key with these scopes: its record, and the key itself, which is never stored or shown again."""
        key = mint_key(mode)
        try:
            row = await self._pool.fetchrow(
                self._sql["create"],
                new_key_id(),
                name,
                display_prefix(key),
                digest(key),
                sorted(s.value for s in set(scopes)),
                expires_at,
            )
        except asyncpg.UniqueViolationError as exc:
            raise KeyNameTaken(
                f"a live key is already named {name!r}: rotate it (a new key, the old one kept for a while) or revoke"
                " it first"
            ) from exc
        assert row is not None
        return _record(row), key

    async def list_keys(self, *, include_revoked: bool = True) -> list[KeyRecord]:
        rows = await self._pool.fetch(self._sql["all" if include_revoked else "live"])
        return [_record(r) for r in rows]

    async def rotate(
        self, name: str, overlap: timedelta, *, expires_at: datetime | None = None
    ) -> tuple[KeyRecord, KeyRecord, str] | None:
        """Replace the current key named `name` by a new one with its scopes and mode, in one transaction, without a
        moment when the caller has no accepted key: the old key stays accepted until the earlier of its own expiry
        and now + `overlap`. The new key expires at `expires_at`, else as long after it is made as the old one did
        after it was (never, if the old one never did). The old key's record, the new one's and the new key itself
        (shown once); None when no current key has that name."""
        async with self._pool.acquire() as conn, conn.transaction():
            current = await conn.fetchrow(self._sql["current"], name)
            if current is None:
                return None
            old = await conn.fetchrow(self._sql["rotated"], current["id"], overlap)
            lifetime = None if current["expires_at"] is None else current["expires_at"] - current["created_at"]
            key = mint_key(mode_of(current["prefix"]))
            new = await conn.fetchrow(
                self._sql["successor"],
                new_key_id(),
                name,
                display_prefix(key),
                digest(key),
                current["scopes"],  # as stored: a scope this version does not know is kept for the one that does
                expires_at,
                lifetime,
            )
        assert old is not None
        assert new is not None
        return _record(old), _record(new), key

    async def revoke(self, id_or_name: str) -> KeyRecord | None:
        """Revoke the key with this id, else the current key with this name; None when there is none (already
        revoked: a no-op). A rotated key is revoked by its id."""
        row = await self._pool.fetchrow(self._sql["revoke"], id_or_name)
        return None if row is None else _record(row)

    async def find(self, key_digest: bytes) -> KeyRecord | None:
        """The key with this digest, revoked or expired ones included (the caller says why it refuses)."""
        self.round_trips += 1
        row = await self._pool.fetchrow(self._sql["find"], key_digest)
        return None if row is None else _record(row)


def _record(row: asyncpg.Record) -> KeyRecord:
    return KeyRecord(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=_known_scopes(row["scopes"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        rotated_at=row["rotated_at"],
    )


def _known_scopes(values: Sequence[str]) -> frozenset[Scope]:
    # A scope written by a newer version that this one does not know grants nothing here.
    known = {s.value for s in Scope}
    return frozenset(Scope(v) for v in values if v in known)
