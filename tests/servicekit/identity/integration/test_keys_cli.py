"""`credited keys create|list|revoke` and the development key file, against the real PostgreSQL."""

import asyncio
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import typer
from typer.testing import CliRunner

from credited.cli import app
from credited.keys import create_development_key, development_keys, parse_expiry
from servicekit.identity import Authenticator, PostgresKeyStore, Scope, Unauthenticated


def run(*args: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(app, list(args))
    return done.exit_code, done.stdout, done.stderr


async def authenticate(database_url: str, schema: str, key: str) -> str:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        caller = await Authenticator(PostgresKeyStore(pool, schema)).authenticate(key)
        return f"{caller.name} {' '.join(sorted(caller.scopes))}"
    except Unauthenticated as refused:
        return refused.detail
    finally:
        await pool.close()


def test_a_key_is_printed_once_at_creation_works_listed_by_prefix_and_refused_once_revoked(
    database_url: str, isolation: str
) -> None:
    db = ["--database-url", database_url, "--schema", isolation]
    code, out, err = run("keys", "create", "--name", "risk-team", "--scope", "review:decide", "--expires", "30d", *db)
    assert code == 0, err
    key = out.strip()
    assert key.startswith("ck_live_") and "review:decide" in err and "shown only now" in err
    assert asyncio.run(authenticate(database_url, isolation, key)) == "risk-team review:decide"
    code, out, _ = run("keys", "list", *db)
    assert code == 0 and "risk-team" in out and key[:14] in out and key not in out
    code, _, err = run("keys", "revoke", "risk-team", *db)
    assert code == 0 and "revoked" in err
    assert asyncio.run(authenticate(database_url, isolation, key)) == "this API key was revoked"
    assert run("keys", "revoke", "risk-team", *db)[0] == 1
    assert "risk-team" not in run("keys", "list", *db)[1]
    assert "risk-team" in run("keys", "list", "--revoked", *db)[1]


def test_an_unknown_scope_is_refused_naming_the_known_ones(database_url: str, isolation: str) -> None:
    code, out, err = run(
        "keys",
        "create",
        "--name",
        "x",
        "--scope",
        "orders:delete",
        "--database-url",
        database_url,
        "--schema",
        isolation,
    )
    assert code == 2 and out == "" and "orders:delete" in err and "orders:write" in err


def test_expiry_is_a_duration_or_a_zoned_time_in_the_future() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("90m", now) == now + timedelta(minutes=90)
    assert parse_expiry("2031-01-01T08:00:00+08:00", now) == datetime(2031, 1, 1, tzinfo=UTC)
    for bad in ("2031-01-01T00:00:00", "2020-01-01T00:00:00+00:00", "0d", "soon"):
        with pytest.raises(typer.BadParameter):
            parse_expiry(bad, now)
    for too_far in ("9999-12-31T23:59:59-01:00", "9999-12-31T23:00:00-05:00"):  # past what a datetime holds in UTC
        with pytest.raises(typer.BadParameter, match="too far ahead"):
            parse_expiry(too_far, now)


def test_a_key_name_empty_or_over_100_characters_is_refused_as_a_usage_error(database_url: str, isolation: str) -> None:
    for name in ("", "n" * 101):
        code, out, err = run(
            "keys", "create", "--name", name, "--scope", "orders:write", "--database-url", database_url,
            "--schema", isolation,
        )  # fmt: skip
        assert code == 2 and out == "" and "1 to 100 characters" in err, err


def test_the_development_key_has_every_scope_is_written_for_its_owner_only_and_replaces_the_last(
    database_url: str, isolation: str, tmp_path: Path
) -> None:
    path = tmp_path / ".credited" / "dev-keys.json"
    first = asyncio.run(create_development_key(database_url, path, schema=isolation))
    second = asyncio.run(create_development_key(database_url, path, schema=isolation))
    assert development_keys(path) == {"development": second} == json.loads(path.read_text())
    assert second.startswith("ck_dev_") and stat.S_IMODE(path.stat().st_mode) == 0o600
    every = " ".join(sorted(s.value for s in Scope))
    assert asyncio.run(authenticate(database_url, isolation, second)) == f"development {every}"
    assert asyncio.run(authenticate(database_url, isolation, first)) == "this API key was revoked"


def test_a_key_name_with_square_brackets_is_printed_as_written_at_creation_in_the_list_and_at_revocation(
    database_url: str, isolation: str
) -> None:
    """A name is free text, and rich reads a str as markup: "[/x]" in one stopped `create` after the key was made
    but before it was printed (a live key nobody holds), and stopped `list` for every key."""
    db = ["--database-url", database_url, "--schema", isolation]
    name = "ops-[/x]-[bold]team"
    created = CliRunner().invoke(app, ["keys", "create", "--name", name, "--scope", "support:read", *db])
    assert created.exit_code == 0, (created.stderr, created.exception)
    assert created.stdout.strip().startswith("ck_live_") and name in created.stderr
    again = CliRunner().invoke(app, ["keys", "create", "--name", name, "--scope", "support:read", *db])
    assert again.exit_code == 1 and name in again.stderr, (again.stderr, again.exception)
    listed = CliRunner().invoke(app, ["keys", "list", *db])
    assert listed.exit_code == 0 and name in listed.stdout, (listed.stdout, listed.exception)
    revoked = CliRunner().invoke(app, ["keys", "revoke", name, *db])
    assert revoked.exit_code == 0 and name in revoked.stderr, (revoked.stderr, revoked.exception)
    gone = CliRunner().invoke(app, ["keys", "revoke", name, *db])
    assert gone.exit_code == 1 and name in gone.stderr, (gone.stderr, gone.exception)
