"""Stand-ins for the consumer loop's broker and database, for unit tests of its batching: a consumer that hands
out prepared polls, a transactional store whose savepoints roll back, and a dead-letter publisher that keeps
what it was given."""

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

from aiokafka import ConsumerRecord, TopicPartition

from contracts.codec import encode, envelope_for
from tests.servicekit.events import paid

Record = ConsumerRecord[bytes, bytes]


def record(order_id: str, offset: int, *, partition: int = 0, value: bytes | None = None) -> Record:
    """A consumed PaymentSucceeded record for `order_id`; `value` replaces its JSON (to make it undecodable)."""
    event = paid(order_id)
    encoded = encode(event, envelope_for(event, producer="test"))
    body = encoded.value if value is None else value
    return ConsumerRecord(
        "t", partition, offset, 0, 0, encoded.key, body, None, len(encoded.key), len(body), encoded.headers
    )


class FakeConsumer:
    """Hands out `polls` one per getmany, then waits forever; commits go to `committed` or raise `refuse`."""

    def __init__(self, polls: Sequence[Mapping[TopicPartition, list[Record]]], refuse: BaseException | None = None):
        self.polls = list(polls)
        self.assigned = {tp for poll in polls for tp in poll}
        self.committed: list[dict[TopicPartition, int]] = []
        self.refuse = refuse

    async def getmany(self, timeout_ms: int) -> Mapping[TopicPartition, list[Record]]:
        if self.polls:
            return self.polls.pop(0)
        await asyncio.sleep(3600)
        return {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.refuse is not None:
            refuse, self.refuse = self.refuse, None
            raise refuse
        self.committed.append(dict(offsets))


class Store:
    """What handlers write: kept when the transaction commits, dropped with a savepoint or transaction that
    rolls back."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self.commits = 0
        self._open: list[str] | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self._open = []
        try:
            yield
        except BaseException:
            self._open = None
            raise
        self.committed += self._open
        self.commits += 1
        self._open = None

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        assert self._open is not None, "a savepoint outside a transaction"
        mark = len(self._open)
        try:
            yield
        except BaseException:
            del self._open[mark:]
            raise

    def write(self, what: str) -> None:
        assert self._open is not None, "a write outside a transaction"
        self._open.append(what)


class KeptDeadLetters:
    """A DeadLetterPublisher that keeps (record, reason) pairs."""

    def __init__(self) -> None:
        self.sent: list[tuple[Record, str]] = []

    async def send_many(self, failed: Sequence[tuple[Record, str]], *, consumer_group: str) -> None:
        self.sent += failed

    def reasons(self) -> dict[bytes, str]:
        return {r.key or b"": reason for r, reason in self.sent}


def polled(*records: Record) -> dict[TopicPartition, list[Record]]:
    out: dict[TopicPartition, list[Record]] = {}
    for r in records:
        out.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
    return out
