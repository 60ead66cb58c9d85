"""Pruning what only grows: rows that serve for a while and then for nothing, deleted once older than their keep time.

Every service keeps the ids of the events each consumer applied (`processed_events`), to drop a redelivered copy. A
copy comes from the broker while the topic keeps the record (7 days by default) or from a replay of a dead letter,
which was never applied and so has no id here; past that, the row can never match again, and at 1,500 orders/s the
ledger alone adds 130 million a day. Rows older than CREDITED_PROCESSED_EVENTS_KEEP_S (14 days: longer than any
topic's retention, which it must stay) are deleted. A service prunes its own tables the same way (payments: refused
callbacks and order Idempotency-Keys), each a `Pruned` with its own keep time.

Rows are deleted in small batches, each its own short transaction, so the service's own writes never wait behind a
long delete. The money itself never depended on these rows alone: the ledger's postings are unique per order and
kind, payments' refunds per order, and nothing that is a record of money (an order, an accepted callback) is pruned.
"""

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

from servicekit.errors import classify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pruned:
    """The rows of `table` older than `keep_s` by their `stamped` column (and only those `only` selects, an SQL
    condition written in code, never from input): `what` names them in the logs. The rows must be found by an index
    on `stamped` (partial on `only`), or each batch scans the table."""

    what: str
    table: str
    stamped: str
    keep_s: float
    only: str = ""

    @property
    def statement(self) -> str:
        """One batch: up to $2 rows older than $1 seconds, deleted by their row address (no key needed)."""
        chosen = f"{self.only} AND " if self.only else ""
        return (
            f"DELETE FROM {self.table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {self.table}"  # noqa: S608 - code only
            f" WHERE {chosen}{self.stamped} < now() - make_interval(secs => $1) LIMIT $2))"
        )


def processed_events(keep_s: float) -> Pruned:
    """The ids of applied events (every service's `processed_events`), kept `keep_s` to drop redelivered copies."""
    return Pruned("processed events", "processed_events", "processed_at", keep_s)


class Retention:
    """Deletes each `Pruned`'s rows past its keep time, `batch` rows a statement, every `interval_s`. `keep_s` alone
    is the processed events' keep time (how servicekit.infrastructure starts it for every service)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *pruned: Pruned,
        keep_s: float | None = None,
        interval_s: float = 600.0,
        batch: int = 5000,
    ) -> None:
        self._pool = pool
        self.pruned = (*([processed_events(keep_s)] if keep_s is not None else []), *pruned)
        self.interval_s = interval_s
        self.batch = batch

    async def prune(self) -> int:
        """Delete every row past its keep time; how many, all tables together."""
        deleted = 0
        for pruned in self.pruned:
            deleted += await self.prune_one(pruned)
        return deleted

    async def prune_one(self, pruned: Pruned) -> int:
        """Delete `pruned`'s rows past its keep time, a batch a transaction; how many."""
        deleted = 0
        while True:
            status = await self._pool.execute(pruned.statement, pruned.keep_s, self.batch)
            rows = int(status.rsplit(" ", 1)[1])
            deleted += rows
            if rows < self.batch:
                return deleted

    async def run(self) -> None:
        """Prune every `interval_s` until cancelled; a database away is waited out (the rows only wait longer)."""
        while True:
            await asyncio.sleep(self.interval_s)
            for pruned in self.pruned:
                try:
                    deleted = await self.prune_one(pruned)
                except Exception as exc:
                    if classify(exc).dependency is None:
                        raise
                    log.warning("could not prune %s, will retry in %.0f s: %r", pruned.what, self.interval_s, exc)
                    break
                if deleted:
                    log.info("pruned %d %s older than %.0f s", deleted, pruned.what, pruned.keep_s)
