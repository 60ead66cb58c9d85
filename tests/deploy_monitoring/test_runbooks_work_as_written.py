"""What an on-call engineer copies from a runbook works as written: every SQL statement of docs/runbooks runs
as pasted into psql (no bind parameters) against the tables the services' migrations create, and the refusal
reasons a runbook tells them to look for are the ones payments records."""

import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from ledger.bootstrap import MIGRATIONS as LEDGER_MIGRATIONS
from notifier.bootstrap import MIGRATIONS as NOTIFIER_MIGRATIONS
from payments.bootstrap import MIGRATIONS as PAYMENTS_MIGRATIONS
from servicekit.postgres import create_pool, migrate
from servicekit.signatures import SignatureError, sign, verify
from tests.deploy_monitoring.conftest import RUNBOOKS_DIR

MIGRATIONS: dict[str, Path] = {
    "payments": PAYMENTS_MIGRATIONS,
    "ledger": LEDGER_MIGRATIONS,
    "notifier": NOTIFIER_MIGRATIONS,
}
SCHEMA_PLACEHOLDER = "<schema>"
"""A statement for any service's schema (`<schema>.outbox`) runs in each of them."""
QUALIFIED = re.compile(r"(?<![\w.\"'])(payments|ledger|notifier)\.(?=[a-z_])")


def sql_statements() -> list[tuple[str, str]]:
    """(runbook:line, statement) for every statement of every ```sql block of the runbooks."""
    found: list[tuple[str, str]] = []
    for path in sorted(RUNBOOKS_DIR.glob("*.md")):
        text = path.read_text()
        for block in re.finditer(r"```sql\n(.*?)```", text, re.S):
            line = text[: block.start()].count("\n") + 1
            for statement in block.group(1).split(";"):
                if re.sub(r"--[^\n]*", "", statement).strip():
                    found.append((f"{path.stem}.md:{line}", statement.strip()))
    return found


@pytest.fixture
async def service_schemas(database_url: str, isolation: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this test's schemas of payments, the ledger and the notifier, migrated."""
    for service, migrations in MIGRATIONS.items():
        pool = await create_pool(database_url, f"{isolation}_{service}", min_size=1, max_size=1)
        try:
            await migrate(pool, migrations)
        finally:
            await pool.close()
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        for service in MIGRATIONS:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{isolation}_{service}" CASCADE')
        await conn.close()


def test_the_runbooks_have_sql_for_each_service_schema() -> None:
    statements = " ".join(statement for _, statement in sql_statements())
    assert {"payments.orders", "ledger.transactions", "notifier.notifications", "<schema>.outbox"} <= {
        m.group(0) for m in re.finditer(r"[<>\w]+\.\w+", statements)
    }


async def test_every_runbook_sql_statement_runs_as_written_against_the_migrated_schemas(
    service_schemas: asyncpg.Connection, isolation: str
) -> None:
    failed: list[str] = []
    for where, statement in sql_statements():
        schemas = list(MIGRATIONS) if SCHEMA_PLACEHOLDER in statement else [""]
        for schema in schemas:
            # The runbooks name the services' schemas; this test's own schemas carry its isolation prefix.
            sql = QUALIFIED.sub(lambda m: f'"{isolation}_{m.group(1)}".', statement.replace(SCHEMA_PLACEHOLDER, schema))
            try:
                await service_schemas.execute(sql)  # no arguments: the simple query protocol, as psql sends it
            except asyncpg.PostgresError as exc:
                failed.append(f"{where}{f' ({schema})' if schema else ''}: {type(exc).__name__}: {exc}\n{statement}")
    assert not failed, "\n\n".join(failed)


def test_the_callback_refusals_provider_callbacks_missing_names_are_the_reasons_payments_records() -> None:
    body, now, secret = b'{"order_id": "ord-1"}', 1_800_000_000, "current-secret"
    runbook = (RUNBOOKS_DIR / "ProviderCallbacksMissing.md").read_text()
    refused = {
        "a key rotated at the provider": sign("rotated-secret", body, now),
        "payments' clock ahead of the provider's": sign(secret, body, now - 3600),
        "payments' clock behind the provider's": sign(secret, body, now + 3600),
    }
    for why, header in refused.items():
        with pytest.raises(SignatureError) as caught:
            verify(header, body, [secret], now)
        assert f"`{caught.value.code}`" in runbook, f"{why}: payments records `{caught.value.code}`, unnamed there"
