"""Many records per round trip to the broker, and still no state durable before what it announces.

The agent handles the records it has in hand one after another: each one's announcements (status
changes, commands) go to the producer without waiting, and its new order state is staged
(table.FaustOrderStates). When no record is waiting, or `MAX_RECORDS` have been handled, the batch is
flushed: wait until the broker has acknowledged every announcement, then write the staged states to
the table (their changelog records go out; commits.py holds every commit until they are acknowledged),
then report the records processed (commits.ProcessedPositions), so their offsets may be committed.

Why that order is safe against a SIGKILL between any two lines: a changelog record is sent only after
the announcements its state records were acknowledged, so a restored state never claims an
announcement the broker does not have (a lost "delayed" or RetryCredit that no replay would send
again). An input offset is committed only after the changelog holds the states of every record below
it. A kill before the flush leaves nothing of the batch in the changelog and its offsets uncommitted:
the next owner replays the records and repeats the announcements with the same deterministic ids and
status sequences, which downstream drops as duplicates.

The ticker flushes at the end of every tick, and the consumer flushes before partitions are revoked,
so nothing stays staged while the agent waits for records or after a partition has moved.
"""

from collections.abc import Awaitable, Callable

from reconciler.adapters.commits import ProcessedPositions
from reconciler.adapters.table import FaustOrderStates

MAX_RECORDS = 1000


class Batch:
    def __init__(
        self,
        states: FaustOrderStates,
        announced: Callable[[], Awaitable[None]],
        positions: ProcessedPositions,
        max_records: int = MAX_RECORDS,
    ) -> None:
        self._states = states
        self._announced = announced
        self._positions = positions
        self._done: list[tuple[str, int, int]] = []
        # Per partition: the next offset in order once the records of this batch count as processed.
        self._ahead: dict[tuple[str, int], int] = {}
        self.max_records = max_records

    def processed(self, topic: str, partition: int, offset: int) -> None:
        """The agent is done with the record at `offset`; it counts as processed once the batch is flushed."""
        self._done.append((topic, partition, offset))
        key = (topic, partition)
        if self._positions.assigned(topic, partition):
            expected = self._ahead[key] if key in self._ahead else self._positions.next_offset(topic, partition)
            if expected is None or offset == expected:
                self._ahead[key] = offset + 1

    def next_offset(self, topic: str, partition: int) -> int | None:
        """The offset of the next record in order, counting this batch's records as processed."""
        key = (topic, partition)
        return self._ahead[key] if key in self._ahead else self._positions.next_offset(topic, partition)

    def missing(self, topic: str, partition: int, offset: int) -> int | None:
        """ProcessedPositions.missing, counting the records of this batch as processed already."""
        ahead = self._ahead.get((topic, partition))
        if ahead is None:
            return self._positions.missing(topic, partition, offset)
        return ahead if offset > ahead else None

    @property
    def full(self) -> bool:
        return len(self._done) >= self.max_records

    @property
    def records(self) -> int:
        return len(self._done)

    async def flush(self) -> None:
        """Wait for the broker to acknowledge the announcements, then write the staged states, then report
        the records processed. If the broker refused an announcement, the batch is undone and this raises:
        the staged states are dropped (the table keeps the states before the batch, so their transitions,
        and the announcements with them, happen again) and no record counts as processed (the records after
        them reach the agent past a hole, and the partition is read again from it)."""
        try:
            await self._announced()
        except BaseException:
            self._states.drop_staged()
            self._done, self._ahead = [], {}
            raise
        self._states.write_staged()
        done, self._done, self._ahead = self._done, [], {}
        for topic, partition, offset in done:
            self._positions.processed(topic, partition, offset)
