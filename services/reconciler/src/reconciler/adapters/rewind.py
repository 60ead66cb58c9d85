"""What the agent does with a record handed over past a hole: skip it, and fetch again from the hole.

faust's fetch loop remembers the last offset it read per partition and drops every record at or below
it. When records it read never reach the agent (a stream queue emptied by a flow resume, a batch cut
short by a rebalance; commits.py), the refetched records are dropped as already read and the first one
past them arrives with a hole before it. Applying it would let the table and the safe time run past
records never read. Skipping it alone would wait forever. Seeking the partition back to the hole
resets aiokafka's fetch position, and a fence holds faust's read offset there until the record at the
hole is handed on (FencedReadOffsets), so the records come again, in order. A record of the batch
faust holds when the seek lands is still handed over past the hole: it is skipped too, and the seek is
repeated once `retry_after_s` has passed with no progress. A partition
that does not recover after `max_rewinds` seeks stops the worker (the caller's `give_up`), which a
supervisor restarts from the last commit.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Seek = Callable[[str, int, int], Awaitable[None]]


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
        await self._seek(topic, partition, missing)
        return True

    def rewinds(self, topic: str, partition: int) -> int:
        hole = self._holes.get((topic, partition))
        return 0 if hole is None else hole.rewinds

    def forget(self, topic: str, partition: int) -> None:
        """The record at the hole arrived: the partition is whole again."""
        self._holes.pop((topic, partition), None)


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
