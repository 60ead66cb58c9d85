"""A unit of work on PostgreSQL: one transaction that holds the state change, the processed event id
and the outgoing events (outbox), committed together or not at all.

Inside a `batch` (a consumer's batch of records), units of work share one connection and transaction:
each is a savepoint, and the batch commits once. One commit per batch instead of one per message is
what lets a consumer keep up; a message that fails rolls back only its savepoint.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from contracts.base import Message
from contracts.codec import Record, encode, envelope_for
from contracts.topics import Topic
from servicekit.outbox import add_to_outbox


@dataclass
class _Batch:
    pool: asyncpg.Pool
    conn: PoolConnectionProxy
    hooks: list[Callable[[], None]] = field(default_factory=list)


_current_batch: ContextVar[_Batch | None] = ContextVar("credited_uow_batch", default=None)


@asynccontextmanager
async def batch(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Units of work on `pool` opened inside share one transaction, committed when the batch ends."""
    async with pool.acquire() as conn, conn.transaction():
        current = _Batch(pool, conn)
        token = _current_batch.set(current)
        try:
            yield
        finally:
            _current_batch.reset(token)
    for hook in dict.fromkeys(current.hooks):
        hook()


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
        shared = _current_batch.get()
        self._batch = shared if shared is not None and shared.pool is self._pool else None
        self.conn = self._batch.conn if self._batch is not None else await self._pool.acquire()
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
            if self._batch is None:
                await self._pool.release(self.conn)
        if exc_type is None and (self._outgoing or self._wake_on_commit):
            if self._batch is not None:
                self._batch.hooks.append(self._on_commit)  # after the batch commits
            else:
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
