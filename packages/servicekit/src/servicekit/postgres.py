"""PostgreSQL connection pools and plain numbered SQL migrations, one schema per service (or per test)."""

import contextlib
import logging
import zlib
from pathlib import Path

import asyncpg

from servicekit.errors import ConcurrentWrite as ConcurrentWrite  # where the ledger's adapter has it from

log = logging.getLogger(__name__)

KIT_MIGRATIONS = Path(__file__).parent / "migrations"


async def keep_session(conn: asyncpg.Connection) -> None:
    """What a released pool connection is reset with: nothing more than asyncpg itself does (it rolls back an
    open transaction and drops listener callbacks before calling this). asyncpg's default adds a round trip
    on every release (pg_advisory_unlock_all, CLOSE ALL, UNLISTEN *, RESET ALL) to undo session state that
    credited's code never leaves behind: no SET left set (the schema is a connection parameter; the outbox relay
    resets its plan_cache_mode when its session ends, or the session is closed), advisory locks only
    per transaction or unlocked by their holder (migrate), no cursor outside a transaction, and every LISTEN
    on a pooled connection undone by its owner (the outbox relay's remove_listener)."""


async def fetch_planned_now(pool: asyncpg.Pool, query: str, *args: object) -> list[asyncpg.Record]:
    """`query`'s rows, planned for its tables as they are now rather than with a plan cached earlier.

    For the claims of queue tables (due payment queries, pending deliveries), empty at rest and filling in an incident:
    PostgreSQL keeps a generic plan after five executions that cost no more, and one made while the queue was empty
    sorts a sequential scan of it and joins the claim back to it row by row, so every claim grows with the queue it is
    meant to drain (the outbox relay's claim took 2-4 s that way; docs/capacity.md, step 3). The setting is local to
    the claim's transaction: the pooled connection keeps no state. Custom plans for every statement cost PostgreSQL
    1.11-1.18x its CPU per order, so only these claims take them."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        return await conn.fetch(query, *args)


async def ensure_schema(pool: asyncpg.Pool, schema: str) -> None:
    """Create `schema` if it is missing (the pool's search_path names it before it exists)."""
    async with pool.acquire() as conn:
        with contextlib.suppress(asyncpg.UniqueViolationError):  # two services creating it at the same moment
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')


async def lazy_pool(dsn: str, schema: str, *, max_size: int = 10) -> asyncpg.Pool:
    """A pool working inside `schema` that connects nothing until a connection is first acquired, so a service
    can start (and answer /healthz) while PostgreSQL is away; each acquire connects anew if the last one failed."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": f"credited-{schema}"},
        reset=keep_session,
    )
    assert pool is not None
    return pool


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
