"""PostgresOrderFeed: wakes an order's open status pages when a notification about it is committed.

The notifications' transaction NOTIFYs their orders' ids, comma separated (see PostgresNotifications), so every
notifier instance hears them, whichever instance consumed the status change. One LISTEN connection per process fans
them out. When that connection is lost, pages fall back to re-reading every heartbeat until it is back.
"""

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import asyncpg

from notifier.adapters.postgres import notify_channel

log = logging.getLogger(__name__)


class PostgresOrderFeed:
    def __init__(self, dsn: str, schema: str, *, check_every_s: float = 10.0, reconnect_s: float = 1.0) -> None:
        self._dsn = dsn
        self._channel = notify_channel(schema)
        self._check_every_s = check_every_s
        self._reconnect_s = reconnect_s
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self.listening = asyncio.Event()

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
        """LISTEN until cancelled, reconnecting when the connection is lost."""
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn)
                await conn.add_listener(self._channel, self._notified)
                self.listening.set()
                self._wake_all()  # whatever was missed while not listening is read again
                while True:
                    await asyncio.sleep(self._check_every_s)
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), self._check_every_s)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("status page feed lost its LISTEN connection, reconnecting: %r", exc)
            finally:
                self.listening.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=1)
            await asyncio.sleep(self._reconnect_s)
