"""`credited keys create|rotate|list|revoke`: API keys for platform backends, risk reviewers and support staff,
and the development key `credited up` and `credited demo` hand to the local clients.

The keys live in the shared `credited_identity` schema of the database the services use (DATABASE_URL).
A key is printed once, when it is made; afterwards only its prefix is shown.
"""

import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

import asyncpg
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from servicekit.identity import IDENTITY_SCHEMA, KeyNameTaken, KeyRecord, PostgresKeyStore, Scope, parse_scopes

DEVELOPMENT_KEY_NAME = "development"
_DURATION = re.compile(r"^(?P<n>[1-9][0-9]{0,5})(?P<unit>[smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
DEFAULT_OVERLAP = "24h"
"""How long a rotated key stays accepted, unless it expires sooner: a day to deploy its successor everywhere."""
T = TypeVar("T")

app = typer.Typer(help="API keys with scopes: create (shown once), rotate, list, revoke.", no_args_is_help=True)

DatabaseUrl = Annotated[
    str, typer.Option(envvar="DATABASE_URL", help="The services' PostgreSQL (DATABASE_URL).", show_default=False)
]
Schema = Annotated[str, typer.Option(help="Schema of the keys (tests use their own).", hidden=True)]


NAME_LIMIT = 100
"""The longest key name the keys' table takes (servicekit identity migration 0001)."""


def parse_duration(value: str) -> timedelta:
    """`24h`, `2d`, `90m`, `30s`: the --overlap of a rotation."""
    match = _DURATION.match(value)
    if not match:
        raise typer.BadParameter("give a duration: 24h, 2d, 90m or 30s")
    return timedelta(**{_UNITS[match["unit"]]: int(match["n"])})


def parse_expiry(value: str, now: datetime) -> datetime:
    """`30d`, `12h`, `90m`, `30s` from now, or an ISO 8601 time with its zone; never in the past."""
    match = _DURATION.match(value)
    try:
        if match:
            when = now + parse_duration(value)
        else:
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                raise typer.BadParameter("give a duration (30d, 12h, 90m) or an ISO 8601 time") from None
            if when.tzinfo is None:
                raise typer.BadParameter("give the time with its zone, e.g. 2031-01-01T00:00:00+00:00")
        if when <= now:
            raise typer.BadParameter("the expiry is not in the future")
        return when.astimezone(UTC)
    except OverflowError:  # past what a datetime holds, in its own zone or in UTC (9999-12-31T23:59:59-01:00)
        raise typer.BadParameter("the expiry is too far ahead: give one before the year 9999") from None


def _on_the_database(database_url: str, schema: str, work: Callable[[PostgresKeyStore], Awaitable[T]]) -> T:
    """`work` run on the keys; a database that cannot be reached or refuses is said in a sentence naming the
    setting to check (exit 2), not a traceback: the stack not up, or a stale DATABASE_URL pasted."""
    try:
        return asyncio.run(_with_store(database_url, schema, work))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        where = urlsplit(database_url).netloc.rpartition("@")[2] or "the default host"  # not the URL's password
        typer.echo(
            f"the database at {where} did not answer as asked: {exc!r}. Set DATABASE_URL (or --database-url) to the"
            " services' PostgreSQL (`credited up` prints it).",
            err=True,
        )
        raise typer.Exit(2) from None


async def _with_store(database_url: str, schema: str, work: Callable[[PostgresKeyStore], Awaitable[T]]) -> T:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        store = PostgresKeyStore(pool, schema)
        await store.migrate()
        return await work(store)
    finally:
        await pool.close()


@app.command("create")
def create(
    name: Annotated[str, typer.Option(help="Who holds the key, e.g. platform-backend, risk-team.")],
    scope: Annotated[list[str], typer.Option(help=f"A scope, repeated: {', '.join(s.value for s in Scope)}.")],
    database_url: DatabaseUrl,
    expires: Annotated[str | None, typer.Option(help="30d, 12h, 90m, or an ISO 8601 time.")] = None,
    schema: Schema = IDENTITY_SCHEMA,
) -> None:
    """Make a key and print it once (stdout); keep it in the caller's secret store."""
    if not 1 <= len(name) <= NAME_LIMIT:  # as the keys' table holds it
        raise typer.BadParameter(f"give a name of 1 to {NAME_LIMIT} characters", param_hint="--name")
    try:
        scopes = parse_scopes(scope)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scope") from None
    expires_at = parse_expiry(expires, datetime.now(UTC)) if expires else None
    try:
        record, key = _on_the_database(database_url, schema, lambda s: s.create(name, scopes, expires_at=expires_at))
    except KeyNameTaken as exc:
        Console(stderr=True).print(str(exc), style="red", markup=False)  # it quotes the name: free text
        raise typer.Exit(1) from None
    Console(stderr=True).print(
        f"created {record.id} {record.name!r} with {', '.join(sorted(record.scopes))}"
        f"{'' if expires_at is None else f', expires {expires_at.isoformat()}'}; the key is shown only now:",
        markup=False,  # a name is free text: "[/x]" in one stopped the command before the key was printed
    )
    sys.stdout.write(key + "\n")


@app.command("rotate")
def rotate(
    name: Annotated[str, typer.Argument(help="The name of the current key, e.g. platform-backend.")],
    database_url: DatabaseUrl,
    overlap: Annotated[
        str, typer.Option(help="How long the old key stays accepted (unless it expires sooner): 24h, 2d, 90m, 30s.")
    ] = DEFAULT_OVERLAP,
    expires: Annotated[
        str | None,
        typer.Option(help="The new key's expiry (30d, 12h, 90m, or an ISO 8601 time); else the old key's lifetime."),
    ] = None,
    schema: Schema = IDENTITY_SCHEMA,
) -> None:
    """Make a new key with the same name and scopes and print it once (stdout); the old key stays accepted for the
    overlap, so the caller deploys the new one without downtime. Its name is kept, and with it what is scoped by
    the name (payments' Idempotency-Keys, the notifier's resends)."""
    grace = parse_duration(overlap)
    expires_at = parse_expiry(expires, datetime.now(UTC)) if expires else None
    rotated = _on_the_database(database_url, schema, lambda s: s.rotate(name, grace, expires_at=expires_at))
    if rotated is None:
        Console(stderr=True).print(f"no current key named {name!r}: nothing to rotate", style="red", markup=False)
        raise typer.Exit(1)
    old, new, key = rotated
    assert old.expires_at is not None  # the overlap always sets one
    Console(stderr=True).print(
        f"rotated {old.id} {old.name!r} ({old.prefix}): still accepted until {_when(old.expires_at)}; created"
        f" {new.id} with {', '.join(sorted(new.scopes))}"
        f"{'' if new.expires_at is None else f', expires {_when(new.expires_at)}'}; the new key is shown only now:",
        markup=False,  # a name is free text: "[/x]" in one is not markup
    )
    sys.stdout.write(key + "\n")


@app.command("list")
def list_keys(
    database_url: DatabaseUrl,
    revoked: Annotated[bool, typer.Option(help="Show revoked keys too.")] = False,
    schema: Schema = IDENTITY_SCHEMA,
) -> None:
    """Every key: id, name, prefix, scopes, created, expires, rotated (still accepted until it expires), revoked."""
    records = _on_the_database(database_url, schema, lambda s: s.list_keys(include_revoked=revoked))
    table = Table("id", "name", "prefix", "scopes", "created", "expires", "rotated", "revoked")
    for r in records:
        # Text, not str: rich reads a str as markup, and a name quoting "[/x]" stopped the list of every key.
        table.add_row(r.id, Text(r.name), r.prefix, " ".join(sorted(r.scopes)), *(_when(t) for t in _times(r)))
    Console(width=200).print(table)


@app.command("revoke")
def revoke(
    key: Annotated[str, typer.Argument(help="The key's id (key_...) or name (its current key; a rotated one by id).")],
    database_url: DatabaseUrl,
    schema: Schema = IDENTITY_SCHEMA,
) -> None:
    """Revoke a live key; every service refuses it within its cache period (CREDITED_API_KEY_CACHE_TTL_S)."""
    record = _on_the_database(database_url, schema, lambda s: s.revoke(key))
    if record is None:
        Console(stderr=True).print(f"no live key with id or name {key!r}", style="red", markup=False)
        raise typer.Exit(1)
    Console(stderr=True).print(f"revoked {record.id} {record.name!r} ({record.prefix})", markup=False)


def _times(record: KeyRecord) -> tuple[datetime, datetime | None, datetime | None, datetime | None]:
    return record.created_at, record.expires_at, record.rotated_at, record.revoked_at


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def create_development_key(database_url: str, path: Path, *, schema: str = IDENTITY_SCHEMA) -> str:
    """A key with every scope for the local stack's clients, written to `path` (`.credited/dev-keys.json`,
    a JSON object of name to key, readable by its owner only); the previous development key is revoked."""

    async def replace(store: PostgresKeyStore) -> str:
        await store.revoke(DEVELOPMENT_KEY_NAME)
        _, key = await store.create(DEVELOPMENT_KEY_NAME, set(Scope), mode="dev")
        return key

    key = await _with_store(database_url, schema, replace)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_suffix(".tmp")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({DEVELOPMENT_KEY_NAME: key}, out)
        out.write("\n")
    staged.replace(path)
    return key


async def create_service_key(database_url: str, name: str, scopes: set[Scope], *, schema: str = IDENTITY_SCHEMA) -> str:
    """A development key one service calls another with (the local stack's payments reading the ledger for its
    money audit); the previous key of that name is revoked."""

    async def replace(store: PostgresKeyStore) -> str:
        await store.revoke(name)
        _, key = await store.create(name, scopes, mode="dev")
        return key

    return await _with_store(database_url, schema, replace)


def development_keys(path: Path) -> dict[str, str]:
    """The keys `create_development_key` wrote, by name."""
    loaded = json.loads(path.read_text())
    assert isinstance(loaded, dict)
    return {str(k): str(v) for k, v in loaded.items()}
