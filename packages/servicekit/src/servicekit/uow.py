"""A unit of work on PostgreSQL: one transaction that holds the state change, the processed event id
and the outgoing events (outbox), committed together or not at all."""

from collections.abc import Callable
from types import TracebackType

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from contracts.base import Message
from contracts.codec import Record, encode, envelope_for
from contracts.topics import Topic
from servicekit.outbox import add_to_outbox


class PostgresUnitOfWork:
    """Base for a service's unit of work; subclasses add the service's own queries on `self.conn`."""

    conn: PoolConnectionProxy

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        producer: str,
        topic_prefix: str,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._topic_prefix = topic_prefix
        self._on_commit = on_commit
        self._outgoing: list[tuple[str, Record]] = []
        self._wake_on_commit = False

    async def __aenter__(self) -> "PostgresUnitOfWork":
        self.conn = await self._pool.acquire()
        self._tx = self.conn.transaction()
        await self._tx.start()
        self._outgoing = []
        self._wake_on_commit = False
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                await add_to_outbox(self.conn, self._outgoing)
                await self._tx.commit()
            else:
                await self._tx.rollback()
        finally:
            await self._pool.release(self.conn)
        if exc_type is None and (self._outgoing or self._wake_on_commit):
            self._on_commit()

    def wake_on_commit(self) -> None:
        """Call the on-commit hook after this unit commits even if it published nothing (new work queued)."""
        self._wake_on_commit = True

    def publish(
        self,
        topic: Topic,
        message: Message,
        *,
        event_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Queue `message` for `topic`; it is written to the outbox when the unit of work commits."""
        envelope = envelope_for(message, producer=self._producer, event_id=event_id, correlation_id=correlation_id)
        self._outgoing.append((topic.qualified(self._topic_prefix), encode(message, envelope)))

    async def mark_processed(self, consumer: str, event_id: str) -> bool:
        """Record that `consumer` applied `event_id`; False if it already had (a redelivery)."""
        inserted = await self.conn.fetchval(
            "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
            consumer,
            event_id,
        )
        return inserted is not None
