"""PostgreSQL connection pools and plain numbered SQL migrations, one schema per service (or per test)."""

import asyncio
import contextlib
import logging
import socket
import time
import zlib
from pathlib import Path
from typing import Any

import asyncpg

from servicekit.errors import ConcurrentWrite as ConcurrentWrite  # where the ledger's adapter has it from

log = logging.getLogger(__name__)

KIT_MIGRATIONS = Path(__file__).parent / "migrations"

COMMAND_TIMEOUT_S = 60.0
"""The longest any statement may wait for PostgreSQL's answer (asyncpg's command_timeout) unless its caller passes
its own. A database host that vanished without a reset (a failover that moved its address, a VM gone, a dropped
route) answers nothing and resets nothing: without it a statement waited until the kernel gave up retransmitting,
about 15 minutes. 60 s is ten times the slowest of the ledger's batch statements seen under load. A statement that
times out is cancelled; when the cancellation is not acknowledged within the same time either (the host is gone),
asyncpg closes the connection, so it is never used again."""

KEEPALIVE_IDLE_S = 30
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_PROBES = 3
USER_TIMEOUT_MS = 60_000
"""TCP keepalive and user timeout on every PostgreSQL connection: an idle pooled connection to a vanished host is
found dead after about a minute of silence (30 s idle, then 3 probes 10 s apart), and one with unacknowledged bytes
after 60 s (TCP_USER_TIMEOUT), where Linux's defaults take two hours and about 15 minutes."""


class KeepAliveConnection(asyncpg.Connection):
    """An asyncpg connection whose socket has TCP keepalives and a user timeout (asyncpg's own options set only
    server settings, GUCs; these are socket options, set here as the connection is made)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        keep_alive(self._transport.get_extra_info("socket"))  # type: ignore[attr-defined]  # asyncpg's own


def keep_alive(sock: socket.socket | None) -> None:
    """Set the keepalive and user-timeout options on a TCP socket (a Unix socket has no such thing)."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), KEEPALIVE_IDLE_S),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL_S),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_PROBES),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), USER_TIMEOUT_MS),
    ]
    for level, option, value in options:
        if option is None:
            continue  # not on this platform (macOS has no TCP_USER_TIMEOUT): the others still apply
        try:
            sock.setsockopt(level, option, value)
        except OSError:
            log.warning("could not set socket option %s on a PostgreSQL connection", option, exc_info=True)


CONNECTION_OPTIONS: dict[str, Any] = {"command_timeout": COMMAND_TIMEOUT_S, "connection_class": KeepAliveConnection}
"""What every connection and pool is made with (see COMMAND_TIMEOUT_S and KeepAliveConnection)."""


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
        **CONNECTION_OPTIONS,
    )
    assert pool is not None
    return pool


async def create_pool(dsn: str, schema: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections work inside `schema` (created if missing)."""
    conn = await asyncpg.connect(dsn, **CONNECTION_OPTIONS)
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
        **CONNECTION_OPTIONS,
    )
    assert pool is not None
    return pool


MIGRATION_TIMEOUT_S = 3600.0
"""A migration (an index built on a large table) or the wait for another instance's may take longer than any
statement of the running service (COMMAND_TIMEOUT_S); a vanished host still ends it within a minute (keepalives)."""

OUTSIDE_A_TRANSACTION = "-- credited: outside a transaction"
"""A migration whose first line is this runs outside a transaction, one statement at a time (a statement ends with a
line that ends in ';'). It is for CREATE INDEX CONCURRENTLY, which PostgreSQL refuses inside a transaction: built in
one, an index on a large table holds every insert and update of that table until it is done (a new index on orders
would stop order placement for as long as the build takes). Every statement must be safe to run again: a process
stopped part way leaves the migration unrecorded, and it runs again from its first statement; an interrupted
concurrent build leaves an invalid index behind, so such a file drops the index (CONCURRENTLY IF EXISTS) first."""

MIGRATION_LOCK_POLL_S = 0.2
"""How often an instance whose migrations another instance is applying asks for the lock again. It asks with
pg_try_advisory_lock rather than waiting inside pg_advisory_lock: a statement waiting there holds a snapshot, and a
concurrent index build waits for every older snapshot to end, so the two instances would wait for each other."""


def statements(sql: str) -> list[str]:
    """The statements of an outside-a-transaction migration: each ends with a line that ends in ';'."""
    out: list[str] = []
    lines: list[str] = []
    for line in sql.splitlines():
        lines.append(line)
        if line.rstrip().endswith(";"):
            out.append("\n".join(lines))
            lines = []
    if any(line.strip() and not line.strip().startswith("--") for line in lines):
        out.append("\n".join(lines))  # the last statement, without its ';'
    return out


async def _lock_migrations(conn: "asyncpg.pool.PoolConnectionProxy[Any]", lock: int) -> None:
    """Take the schema's migration lock, waiting for another instance's migrations without holding a snapshot."""
    deadline = time.monotonic() + MIGRATION_TIMEOUT_S
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock):
        if time.monotonic() > deadline:
            raise TimeoutError(f"another instance held the migration lock for {MIGRATION_TIMEOUT_S:.0f} s")
        await asyncio.sleep(MIGRATION_LOCK_POLL_S)


async def migrate(pool: asyncpg.Pool, *directories: Path) -> list[str]:
    """Apply every `NNNN_name.sql` not applied yet, kit migrations first; safe when run concurrently."""
    applied: list[str] = []
    async with pool.acquire() as conn:
        schema = await conn.fetchval("SELECT current_schema()")
        lock = zlib.crc32(f"migrate:{schema}".encode())
        await _lock_migrations(conn, lock)
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
                    sql = path.read_text()
                    if sql.startswith(OUTSIDE_A_TRANSACTION):
                        for statement in statements(sql):
                            await conn.execute(statement, timeout=MIGRATION_TIMEOUT_S)
                        await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
                    else:
                        async with conn.transaction():
                            await conn.execute(sql, timeout=MIGRATION_TIMEOUT_S)
                            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
                    log.info("applied migration %s in schema %s", name, schema)
                    applied.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock)
    return applied
