"""Pruning what only grows: the ids of the events each consumer applied (`processed_events`), kept as long as a
copy of the event can still arrive, then deleted.

A processed event's id exists to drop a redelivered copy. A copy comes from the broker while the topic keeps the
record (7 days by default) or from a replay of a dead letter, which was never applied and so has no id here; past
that, the row can never match again, and at 1,500 orders/s the ledger alone adds 130 million a day. Rows older than
CREDITED_PROCESSED_EVENTS_KEEP_S (14 days: longer than any topic's retention, which it must stay) are deleted in
small batches, each its own short transaction, so the service's own writes never wait behind a long delete. The
money itself never depended on these rows alone: the ledger's postings are unique per order and kind, payments'
refunds per order.
"""

import asyncio
import logging

import asyncpg

from servicekit.errors import classify

log = logging.getLogger(__name__)

_PRUNE = (
    "DELETE FROM processed_events WHERE ctid = ANY(ARRAY(SELECT ctid FROM processed_events"
    " WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2))"
)


class Retention:
    """Deletes processed-event ids older than `keep_s`, `batch` rows a statement, every `interval_s`."""

    def __init__(self, pool: asyncpg.Pool, *, keep_s: float, interval_s: float = 600.0, batch: int = 5000) -> None:
        self._pool = pool
        self.keep_s = keep_s
        self.interval_s = interval_s
        self.batch = batch

    async def prune(self) -> int:
        """Delete every row past `keep_s`; how many."""
        deleted = 0
        while True:
            status = await self._pool.execute(_PRUNE, self.keep_s, self.batch)
            rows = int(status.rsplit(" ", 1)[1])
            deleted += rows
            if rows < self.batch:
                return deleted

    async def run(self) -> None:
        """Prune every `interval_s` until cancelled; a database away is waited out (the rows only wait longer)."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                deleted = await self.prune()
            except Exception as exc:
                if classify(exc).dependency is None:
                    raise
                log.warning("could not prune processed events, will retry in %.0f s: %r", self.interval_s, exc)
                continue
            if deleted:
                log.info("pruned %d processed events older than %.0f s", deleted, self.keep_s)
