"""What the pipeline asks of PostgreSQL per order: statements (pg_stat_statements, top level and inside
functions and triggers, such as the foreign key checks) and commits (pg_stat_database), counted between two
marks of a rate step. Counts follow batching depth and move far less with the machine's speed than timings,
so two reports from a shared machine compare on them. The statements' execution time says where PostgreSQL's
time goes, which counts do not: the foreign key checks were half the statements and about 5% of its CPU."""

import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

SETTINGS = ("shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all")
"""The server settings the counter needs (the bench's embedded PostgreSQL starts with them)."""

_STATEMENTS = "SELECT calls, total_exec_time, query FROM pg_stat_statements"
_COMMITS = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"


@dataclass
class Counts:
    statements: dict[str, int]
    """Calls by statement text. pg_stat_statements gives every foreign key check one query id, whatever its table:
    it keeps one entry for all the checks run inside a statement, under the text of the first it saw, and one
    for the deferred ones (checked at commit, so counted as top level), under another table's text. Keyed by
    query id, those two would be one row here."""
    commits: int
    exec_ms: dict[str, float]
    """Execution time by statement text (ms), waits for locks included. A statement's time includes the
    statements and triggers it runs (a function's statements, the foreign key checks of an insert), which have
    rows of their own too: the times overlap and do not add up."""


class StatementCounter:
    """Statements and commits of the whole server from `mark` to `per_order` (other databases' included: the
    bench's server holds only the stack)."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._mark: Counts | None = None

    async def available(self) -> bool:
        """Whether the server has pg_stat_statements loaded (an outside server may not)."""
        conn = await asyncpg.connect(self._database_url)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.fetchval("SELECT count(*) FROM pg_stat_statements")
        except asyncpg.PostgresError as exc:
            log.warning("statements per order are not counted: %s", exc)
            return False
        finally:
            await conn.close()
        return True

    async def _counts(self) -> Counts:
        conn = await asyncpg.connect(self._database_url)
        try:
            rows = await conn.fetch(_STATEMENTS)
            commits = int(await conn.fetchval(_COMMITS))
        finally:
            await conn.close()
        statements: dict[str, int] = {}
        exec_ms: dict[str, float] = {}
        for row in rows:  # one statement may have a row per user and database
            text = " ".join(row["query"].split())
            statements[text] = statements.get(text, 0) + row["calls"]
            exec_ms[text] = exec_ms.get(text, 0.0) + row["total_exec_time"]
        return Counts(statements, commits, exec_ms)

    async def mark(self) -> None:
        self._mark = await self._counts()

    async def per_order(self, orders: int, top: int = 15) -> dict[str, Any]:
        """Since the mark, per order: statements, commits, and the `top` statements by calls and by execution
        time."""
        assert self._mark is not None, "mark first"
        now, before = await self._counts(), self._mark
        calls = {text: n - before.statements.get(text, 0) for text, n in now.statements.items()}
        made = sorted(((n, text) for text, n in calls.items() if n > 0), reverse=True)
        per = max(orders, 1)
        spent = {text: ms - before.exec_ms.get(text, 0.0) for text, ms in now.exec_ms.items()}
        longest = sorted(((ms, text) for text, ms in spent.items() if ms > 0), reverse=True)
        return {
            "orders": orders,
            # the counter's own few statements and commits are in these (a handful in a step of thousands of orders)
            "statements_per_order": round(sum(n for n, _ in made) / per, 2),
            "commits_per_order": round((now.commits - before.commits) / per, 2),
            "top": [{"per_order": round(n / per, 2), "statement": text[:160]} for n, text in made[:top]],
            "top_by_time": [
                {
                    "ms_per_order": round(ms / per, 4),
                    "calls_per_order": round(calls.get(text, 0) / per, 2),
                    "statement": text[:160],
                }
                for ms, text in longest[:top]
            ],
        }
