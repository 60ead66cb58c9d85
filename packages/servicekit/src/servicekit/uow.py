"""A unit of work on PostgreSQL: one transaction that holds the state change, the processed event id
and the outgoing events (outbox), committed together or not at all.

Inside a `batch` (a consumer's poll), units of work share one connection and transaction, and the batch commits
once. One commit per poll instead of one per message is what lets a consumer keep up. A unit of work inside a
batch opens no savepoint of its own (two round trips per poll): one that fails fails the scope it runs in, the
whole batch or the message's `savepoint`, even if the code around it swallowed the error. A consumer whose batch
failed handles the poll again one message at a time, each in a `savepoint`, so a message that fails rolls back
alone. The outgoing events of the units that succeeded are written to the outbox together, in their order, just
before the batch commits; the callbacks they registered run once it has committed.
"""

import functools
from collections.abc import AsyncIterator, Callable, Sequence
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


@functools.cache  # called once per outgoing event; the enum's value lookup is what costs
def _qualified(topic: Topic, prefix: str) -> str:
    return topic.qualified(prefix)


@dataclass
class _Batch:
    pool: asyncpg.Pool
    conn: PoolConnectionProxy
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    outgoing: list[tuple[str, Record]] = field(default_factory=list)
    failed: BaseException | None = None
    """The error of a unit of work that failed in the current scope (batch or savepoint): the scope must not
    commit, since that unit's statements are not rolled back on their own."""


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
        if current.failed is not None:
            raise current.failed  # swallowed inside: the batch rolls back as if it had not been
        await add_to_outbox(conn, current.outgoing)
    for callback in dict.fromkeys(current.after_commit):
        callback()


@asynccontextmanager
async def savepoint() -> AsyncIterator[None]:
    """Inside a batch, a savepoint of its transaction: if it rolls back, so does everything the units of work
    inside it queued for the batch's end. Outside a batch, nothing."""
    current = _current_batch.get()
    if current is None:
        yield
        return
    outgoing, after_commit, outer_failed = len(current.outgoing), len(current.after_commit), current.failed
    current.failed = None
    try:
        async with current.conn.transaction():
            yield
            if current.failed is not None:
                raise current.failed  # swallowed inside: the savepoint rolls back as if it had not been
    except BaseException:
        del current.outgoing[outgoing:]
        del current.after_commit[after_commit:]
        raise
    finally:
        current.failed = outer_failed


def no_relay() -> None:
    """The on-commit hook of a unit of work that no outbox relay in its process publishes for (a test or a
    benchmark that reads the outbox itself): nothing to wake."""


class PostgresUnitOfWork:
    """Base for a service's unit of work; subclasses add the service's own queries on `self.conn`.

    `on_commit` has no default: it is what publishes the unit's outbox rows at once (the service's relay's
    `wake`; Infrastructure.outbox_writers passes it). A unit whose rows waited for the relay's fallback poll
    would cost each of them up to a second, with nothing failing to say so."""

    conn: PoolConnectionProxy

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        producer: str,
        topic_prefix: str,
        on_commit: Callable[[], None],
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
        if self._batch is not None:
            self.conn = self._batch.conn  # the batch's transaction: no savepoint (see the module docstring)
        else:
            self.conn = await self._pool.acquire()
            self._tx = self.conn.transaction()
            await self._tx.start()
        self._outgoing = []
        self._after_commit: list[Callable[[], None]] = []
        self._wake_on_commit = False
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._batch is not None:
            if exc is not None:
                self._batch.failed = exc
                return
        else:
            try:
                if exc_type is None:
                    await add_to_outbox(self.conn, self._outgoing)
                    await self._tx.commit()
                else:
                    await self._tx.rollback()
            finally:
                await self._pool.release(self.conn)
            if exc_type is not None:
                return
        after = [*self._after_commit, *([self._on_commit] if self._outgoing or self._wake_on_commit else [])]
        if self._batch is not None:  # written once for the whole batch, and called once it committed
            self._batch.outgoing += self._outgoing
            self._batch.after_commit += after
        else:
            for callback in after:
                callback()

    def wake_on_commit(self) -> None:
        """Call the on-commit hook after this unit commits even if it published nothing (new work queued)."""
        self._wake_on_commit = True

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once this unit's changes are committed (inside a batch: once the batch is); never if
        they roll back."""
        self._after_commit.append(callback)

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
        self._outgoing.append((_qualified(topic, self._topic_prefix), encode(message, envelope)))

    async def mark_processed_many(self, events: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Record that each consumer applied each event id, (consumer, event id) pairs, in one statement; the
        pairs not recorded before (the others are redeliveries)."""
        rows = await self.conn.fetch(
            "INSERT INTO processed_events (consumer, event_id) SELECT * FROM unnest($1::text[], $2::text[])"
            " ON CONFLICT DO NOTHING RETURNING consumer, event_id",
            [consumer for consumer, _ in events],
            [event_id for _, event_id in events],
        )
        return {(row["consumer"], row["event_id"]) for row in rows}

    async def mark_processed(self, consumer: str, event_id: str) -> bool:
        """Record that `consumer` applied `event_id`; False if it already had (a redelivery)."""
        inserted = await self.conn.fetchval(
            "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
            consumer,
            event_id,
        )
        return inserted is not None
