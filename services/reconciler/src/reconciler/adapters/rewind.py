"""What the agent does with a record handed over past a hole: skip it, and fetch again from the hole.

faust's fetch loop remembers the last offset it read per partition and drops every record at or below
it. When records it read never reach the agent (a stream queue emptied by a flow resume, a batch cut
short by a rebalance; consumer.py), the refetched records are dropped as already read and the first one
past them arrives with a hole before it. Applying it would let the table and the safe time run past
records never read. Skipping it alone would wait forever. Seeking the partition back to the hole
resets aiokafka's fetch position, and a fence holds faust's read offset there until the record at the
hole is handed on (FencedReadOffsets), so the records come again, in order. A record of the batch
faust holds when the seek lands is still handed over past the hole: it is skipped too, and the seek is
repeated once `retry_after_s` has passed with no progress. A partition
that does not recover after `max_rewinds` seeks stops the worker (the caller's `give_up`), which a
supervisor restarts from the last commit.

A hole at the tail of a partition shows no record past it, so nothing above reveals it. faust drops
records it has taken from aiokafka when the flow stops or the generation changes in the middle of a
fetched batch (`Consumer.getmany` breaks out of it), and seeks back only if the flow is still stopped
at the next fetch. Seen on Apache Kafka after a worker kept a partition through a rebalance while the
traffic ended: aiokafka's position was at the end offset, faust's read offset at the committed one,
the agent eight records short of the end, nothing waiting, and the two orders among them never timed
(missed flags). TailWatch finds that state: records on the broker past the agent's position, nothing
waiting for the agent, and no progress for `STUCK_AFTER_S`; the partition is then read again from the
position exactly as from a hole, under the same count of seeks.

A round undone because the broker refused its announcements (rounds.py) leaves its records uncounted as
well: the records after it arrive past the hole, or the partition stands still below its end, and it is
read again the same way.

Tests: tests/reconciler/unit/test_rewind.py (each behaviour against a model of faust's fetch loop), and the
SIGKILL test in tests/e2e/test_reconciler_resilience.py, which shows it is still needed with the rounds:
in one run on Apache Kafka its workers met three holes and two partitions standing still after the
SIGKILLs and rebalances (their logs: "reading again from ... (hole)" and "(stuck)"); without reading them
again those partitions would have waited forever, or been applied past records never read.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Seek = Callable[[str, int, int, str], Awaitable[None]]
"""seek(topic, partition, offset, why): read the partition again from `offset`."""

STUCK_AFTER_S = 2.0
UNREADABLE_AFTER_S = 0.5
"""How long a partition stands still below its end before the broker is asked whether the offsets up to the end
hand over no record (TailWatch): short, since the partition's safe time, and every deadline on it, waits for it;
long enough that a record merely in flight is handed over first (each question is a connection of its own)."""


@dataclass
class _Hole:
    offset: int
    sought_at: float
    rewinds: int


class Rewinder:
    def __init__(
        self,
        seek: Seek,
        clock: Callable[[], float],
        *,
        retry_after_s: float = 1.0,
        max_rewinds: int = 20,
    ) -> None:
        self._seek = seek
        self._clock = clock
        self._retry_after_s = retry_after_s
        self._max_rewinds = max_rewinds
        self._holes: dict[tuple[str, int], _Hole] = {}
        self.skipped = 0

    async def past_hole(self, topic: str, partition: int, missing: int) -> bool:
        """A record of `topic[partition]` came before the one at `missing`: it is skipped. Seek back to
        `missing` unless that was just done; return False once the partition has been sought back
        `max_rewinds` times to the same hole (the caller stops the worker)."""
        self.skipped += 1
        return await self._read_again(topic, partition, missing, "hole")

    async def stuck(self, topic: str, partition: int, position: int) -> bool:
        """`topic[partition]` stands still at `position` below the broker's end offset (TailWatch): read
        it again from there, counted with the holes; False when the caller should stop the worker."""
        return await self._read_again(topic, partition, position, "stuck")

    async def _read_again(self, topic: str, partition: int, missing: int, why: str) -> bool:
        now = self._clock()
        hole = self._holes.get((topic, partition))
        if hole is not None and hole.offset == missing:
            if now - hole.sought_at < self._retry_after_s:
                return True
            if hole.rewinds >= self._max_rewinds:
                return False
            hole.rewinds += 1
            hole.sought_at = now
        else:
            self._holes[(topic, partition)] = _Hole(missing, now, 1)
        await self._seek(topic, partition, missing, why)
        return True

    def rewinds(self, topic: str, partition: int) -> int:
        hole = self._holes.get((topic, partition))
        return 0 if hole is None else hole.rewinds

    def forget(self, topic: str, partition: int) -> None:
        """The record at the hole arrived: the partition is whole again."""
        self._holes.pop((topic, partition), None)


class TailWatch:
    """Per input partition: reads it again from the agent's position once that has stood still below
    the broker's end offset for `after_s` while the agent is idle. The ticker reports the positions and end
    offsets; `waiting` says whether the agent has records in hand or applied any lately (while it catches up,
    faust hands some partitions over seconds after others: they are not stuck, and reading them again throws
    their fetched records away); `give_up` is called when the Rewinder says the partition does not recover.

    A position that stands still below the end for `unreadable_after_s` is first asked whether the offsets up to
    the end hand over no record (`past_unreadable`: the commit marker a transaction leaves after the last record
    of a partition, rounds.py), once per standstill and whatever the agent is doing: that asks the broker only and
    moves the position only past offsets no consumer is handed, so it throws nothing away. Waiting for the agent to
    be idle there would hold the partition's safe time, and every deadline on it, for as long as records kept
    arriving on the worker's other partitions (on Apache Kafka, a payment replayed in a transaction went unflagged
    as long as payments flowed on another partition: tests/reconciler/integration/test_transaction_markers.py)."""

    def __init__(
        self,
        rewinder: Rewinder,
        clock: Callable[[], float],
        waiting: Callable[[], bool],
        give_up: Callable[[str, int, int], None],
        *,
        after_s: float = STUCK_AFTER_S,
        past_unreadable: Callable[[str, int, int, int], Awaitable[int]] | None = None,
        unreadable_after_s: float = UNREADABLE_AFTER_S,
    ) -> None:
        self._rewinder = rewinder
        self._past_unreadable = past_unreadable
        self._clock = clock
        self._waiting = waiting
        self._give_up = give_up
        self._after_s = after_s
        self._unreadable_after_s = min(unreadable_after_s, after_s)
        # Per partition: the position standing still, since when, and whether the broker was asked about it yet.
        self._since: dict[tuple[str, int], tuple[int, float, bool]] = {}

    async def observe(self, topic: str, partition: int, position: int | None, end: int) -> None:
        """The agent is at `position` in `topic[partition]`, the broker at `end`."""
        key = (topic, partition)
        now = self._clock()
        if position is None or position >= end:
            self._since.pop(key, None)
            return
        seen = self._since.get(key)
        if seen is None or seen[0] != position:
            self._since[key] = (position, now, False)
            return
        if self._past_unreadable is not None and not seen[2] and now - seen[1] >= self._unreadable_after_s:
            self._since[key] = (position, seen[1], True)
            if await self._past_unreadable(topic, partition, position, end) != position:
                self._since.pop(key, None)  # past the markers: the end, or records the agent is handed next
                return
        if now - seen[1] < self._after_s or self._waiting():
            return
        self._since[key] = (position, now, False)  # the wait starts again
        if self._past_unreadable is not None:  # offsets that hand over no record (rounds.py) are not a standstill
            position = await self._past_unreadable(topic, partition, position, end)
            if position >= end:
                self._since.pop(key, None)
                return
        if not await self._rewinder.stuck(topic, partition, position):
            self._give_up(topic, partition, position)

    def forget(self, topic: str, partition: int) -> None:
        """The partition was handed over: its fetching starts again from the committed offset."""
        self._since.pop((topic, partition), None)


class FencedReadOffsets(dict[Any, int | None]):
    """faust's per-partition read offsets (`Consumer._read_offset`), which its fetch loop compares every
    fetched record against, dropping those below, and moves to each record it hands on. A seek back sets
    the read offset to the seek's offset, but the fetch loop may be in the middle of a batch it fetched
    before the seek: it goes on handing on those later records and moves the read offset past them,
    and the records the seek fetches again are dropped as already read (seen on Apache Kafka: a seek
    had to be repeated ten times in eleven seconds under traffic before one held).

    A fence holds a partition's read offset at the seek's offset until the record at that offset has
    been handed on: records of the stale batch still pass (the agent skips them, they are past the
    hole), and the refetched ones are no longer dropped. Missing entries read as None, as in faust's
    defaultdict."""

    def __init__(self) -> None:
        super().__init__()
        self._fences: dict[Any, int] = {}

    def __missing__(self, tp: Any) -> None:
        return None

    def fence(self, tp: Any, offset: int) -> None:
        self._fences[tp] = offset
        super().__setitem__(tp, offset)

    def fenced(self, tp: Any) -> int | None:
        return self._fences.get(tp)

    def __setitem__(self, tp: Any, offset: int | None) -> None:
        fence = self._fences.get(tp)
        if fence is not None:
            if offset != fence:
                return
            del self._fences[tp]
        super().__setitem__(tp, offset)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """A seek to the committed offsets (faust's perform_seek) replaces the fences of its partitions."""
        new = dict(*args, **kwargs)
        for tp in new:
            self._fences.pop(tp, None)
        super().update(new)

    def pop(self, tp: Any, *default: Any) -> Any:
        self._fences.pop(tp, None)
        return super().pop(tp, *default)


class RecoveryWatch:
    """faust's table recovery sometimes never receives a record of a changelog partition it restores, and
    the worker stays in recovery, reconciling nothing of its partitions (seen on Apache Kafka after the SIGKILL
    test killed one side: the other's recovery of two changelog partitions logged "No event received for
    active tp ... since recovery start" for minutes, its orders' deadlines passed unflagged; in later runs
    it stood still after most rebalances that moved a changelog partition). A partition whose remaining
    records have not moved for `after_s` is read again from where the recovery is, on the consumer's own
    thread, counted with the other reads again: that has always set it going. The cause is not established
    (a changelog partition is never committed, so aiokafka resets its position while faust's recovery seeks
    it: a race like the one consumer.py's (3) is about is the likeliest). After `max_rewinds` for one
    partition the caller's `give_up` stops the worker, whose partitions then go to another.

    Test: the SIGKILL test in tests/e2e/test_reconciler_resilience.py (the run that found it)."""

    def __init__(
        self,
        seek: Seek,
        clock: Callable[[], float],
        give_up: Callable[[str, int, int], None],
        *,
        after_s: float = 3.0,
        max_rewinds: int = 10,
    ) -> None:
        self._seek, self._clock, self._give_up = seek, clock, give_up
        self._after_s, self._max_rewinds = after_s, max_rewinds
        self._since: dict[Any, tuple[int, float, int]] = {}  # tp -> (remaining, since, rewinds)

    async def observe(self, remaining: dict[Any, int], offsets: dict[Any, int]) -> None:
        """The recovery's records still to read per changelog partition, and the last offset it applied."""
        now = self._clock()
        for tp in list(self._since):
            if remaining.get(tp, 0) <= 0:
                del self._since[tp]
        for tp, left in remaining.items():
            if left <= 0:
                continue
            seen = self._since.get(tp)
            if seen is None or seen[0] != left:
                self._since[tp] = (left, now, 0 if seen is None else seen[2])
                continue
            if now - seen[1] < self._after_s:
                continue
            if seen[2] >= self._max_rewinds:
                self._give_up(tp.topic, tp.partition, left)
                continue
            self._since[tp] = (left, now, seen[2] + 1)
            await self._seek(tp.topic, tp.partition, max(offsets.get(tp, -1), -1) + 1, "recovery")
