"""PostgreSQL connection pools and plain numbered SQL migrations, one schema per service (or per test)."""

import logging
import zlib
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

KIT_MIGRATIONS = Path(__file__).parent / "migrations"


async def keep_session(conn: asyncpg.Connection) -> None:
    """What a released pool connection is reset with: nothing more than asyncpg itself does (it rolls back an
    open transaction and drops listener callbacks before calling this). asyncpg's default adds a round trip
    on every release (pg_advisory_unlock_all, CLOSE ALL, UNLISTEN *, RESET ALL) to undo session state that
    credited's code never leaves behind: no SET (the schema is a connection parameter), advisory locks only
    per transaction or unlocked by their holder (migrate), no cursor outside a transaction, and every LISTEN
    on a pooled connection undone by its owner (the outbox relay's remove_listener)."""


async def create_pool(dsn: str, schema: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections work inside `schema` (created if missing)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    except asyncpg.UniqueViolationError:
        pass  # two services creating the schema at the same moment
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": f"credited-{schema}"},
        reset=keep_session,
    )
    assert pool is not None
    return pool


async def migrate(pool: asyncpg.Pool, *directories: Path) -> list[str]:
    """Apply every `NNNN_name.sql` not applied yet, kit migrations first; safe when run concurrently."""
    applied: list[str] = []
    async with pool.acquire() as conn:
        schema = await conn.fetchval("SELECT current_schema()")
        await conn.execute("SELECT pg_advisory_lock($1)", zlib.crc32(f"migrate:{schema}".encode()))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
            for directory in (KIT_MIGRATIONS, *directories):
                for path in sorted(directory.glob("[0-9]*.sql")):
                    name = f"{directory.parent.name}/{path.name}"
                    if name in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(path.read_text())
                        await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
                    log.info("applied migration %s in schema %s", name, schema)
                    applied.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", zlib.crc32(f"migrate:{schema}".encode()))
    return applied


class ConcurrentWrite(Exception):
    """What a unit of work read has changed under it (another instance wrote the same rows first): nothing it
    decided may be kept; a consumer rolls the batch back and retries it."""


TRANSIENT_DB: tuple[type[BaseException], ...] = (
    ConcurrentWrite,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    # "out of shared memory": the server's lock table is full (many consumers holding many locks at once); it
    # empties as they commit.
    asyncpg.exceptions.OutOfMemoryError,
)
"""Database failures that pass by themselves: a consumer retries them instead of dead-lettering."""
