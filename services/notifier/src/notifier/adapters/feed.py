"""PostgresOrderFeed: wakes an order's open status pages when a notification about it is committed.

The notifications' transaction NOTIFYs their orders' ids, comma separated (see PostgresNotifications), so every
notifier instance hears them, whichever instance consumed the status change. One LISTEN connection per process fans
them out. When that connection is lost, pages fall back to re-reading every heartbeat until it is back; a NOTIFY sent
while nobody listened is gone, so every open page re-reads once when the feed listens again.

The connection's loss is noticed when it happens (asyncpg's termination listener: the server ended the session or the
socket closed), not at the next check; a periodic SELECT 1 still catches a connection that went silent without being
closed (a network partition). Reconnects back off (FEED_BACKOFF), and the outage is logged in a few lines: the loss,
each growth of the backoff, and the return with how long the feed did not listen.
"""

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from functools import partial

import asyncpg

from notifier.adapters.postgres import notify_channel
from servicekit.retrying import BackoffPolicy, Outage

log = logging.getLogger(__name__)

FEED_BACKOFF = BackoffPolicy(initial_s=0.5, cap_s=4.0)
"""How long the feed waits before it tries to LISTEN again while the database is away: half a second, doubling up to
a few seconds (jittered, so the instances that lost the same database do not all come back at once). Open pages hear
the changes made meanwhile within about the cap of its return; until then their heartbeat re-reads them."""

LOST = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
"""What a lost or unreachable database raises to the feed."""


def _set(event: asyncio.Event, _conn: object) -> None:
    event.set()


class PostgresOrderFeed:
    def __init__(
        self, dsn: str, schema: str, *, check_every_s: float = 10.0, backoff: BackoffPolicy = FEED_BACKOFF
    ) -> None:
        self._dsn = dsn
        self._channel = notify_channel(schema)
        self._check_every_s = check_every_s
        self._backoff = backoff
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self.listening = asyncio.Event()
        self._outage = Outage(backoff)
        """Since the feed stopped listening: its loss, then each try to LISTEN again that failed."""

    @contextlib.contextmanager
    def watch(self, order_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the order's notifications may have changed, for the `with` block."""
        event = asyncio.Event()
        self._watchers.setdefault(order_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers.get(order_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[order_id]

    def _notified(self, _conn: object, _pid: int, _channel: str, order_ids: object) -> None:
        for order_id in str(order_ids).split(","):
            for event in self._watchers.get(order_id, ()):
                event.set()

    def _wake_all(self) -> None:
        for watchers in self._watchers.values():
            for event in watchers:
                event.set()

    async def run(self) -> None:
        """LISTEN until cancelled, reconnecting with backoff when the connection is lost."""
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(partial(_set, lost))
                await conn.add_listener(self._channel, self._notified)
                self._listening()
                await self._hold(conn, lost)
            except LOST as exc:
                self._deaf(exc)
            finally:
                self.listening.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=1)
            await asyncio.sleep(self._outage.delay())

    async def _hold(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Return when the connection is lost; raise when a check of it fails."""
        while not lost.is_set() and not conn.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self._check_every_s)
            if lost.is_set() or conn.is_closed():
                break
            await asyncio.wait_for(conn.fetchval("SELECT 1"), self._check_every_s)
        raise asyncpg.InterfaceError("connection is closed")

    def _listening(self) -> None:
        if run := self._outage.ended():
            log.info(
                "status page feed listening again after %.1fs (%d tries failed); open pages re-read what they missed",
                run[0],
                run[1] - 1,  # the first of the run was the loss
            )
        self.listening.set()
        self._wake_all()  # whatever was missed while not listening is read again

    def _deaf(self, exc: BaseException) -> None:
        """Count a loss or a failed try to LISTEN again: the loss is logged, then a try only when it grows the backoff
        (until its cap), so a failover of a minute takes a handful of lines, not one a try."""
        ceiling = self._outage.failed()
        if self._outage.failures == 1:
            log.warning(
                "status page feed is not listening (its LISTEN connection was lost or refused), open pages re-read at"
                " their heartbeat until it is back; retrying with backoff up to %.1fs: %r",
                self._backoff.cap_s,
                exc,
            )
        elif ceiling is not None:
            tries = self._outage.failures - 1
            log.warning(
                "status page feed still cannot LISTEN (%d tries), next try within %.1fs: %r", tries, ceiling, exc
            )
