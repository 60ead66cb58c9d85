"""Safe time: how far in wall-clock time the reconciler knows each input partition completely. Pure.

The argument, written down: at wall time T the broker's end offset of a partition is E(T); every record
appended before T has an offset below E(T). Once the reconciler has processed that partition of both
input streams up to E(T), it has seen every payment and every credit appended before T. So an order
whose deadline D <= T and that has no credit in what we processed has no credit in ledger.events before
T >= D: it is overdue, and flagging it is never a false alarm, even while catching up after a restart.

End offsets are sampled on every tick whether records arrive or not, so an idle stream keeps moving
the safe time forward (no frozen clock). On a new assignment the processed position starts at the
group's committed offset: everything below it was applied by an earlier owner and is in the table.
"""

from collections import deque
from dataclasses import dataclass
from datetime import datetime

TopicPartition = tuple[str, int]

MAX_SNAPSHOTS = 2000


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: datetime
    ends: dict[str, int]


class Watermarks:
    def __init__(self, topics: tuple[str, ...]) -> None:
        self.topics = topics
        self._processed: dict[TopicPartition, int] = {}
        self._snapshots: dict[int, deque[Snapshot]] = {}
        self._safe: dict[int, datetime] = {}
        self._assigned_at: dict[int, datetime] = {}

    def assign(self, partition: int, committed: dict[str, int], at: datetime) -> None:
        """A partition arrived at wall time `at`: its records below the committed offsets were applied already."""
        for topic in self.topics:
            self._processed[(topic, partition)] = max(0, committed.get(topic, 0))
        self._snapshots[partition] = deque(maxlen=MAX_SNAPSHOTS)
        self._safe.pop(partition, None)
        self._assigned_at[partition] = at

    def revoke(self, partition: int) -> None:
        for topic in self.topics:
            self._processed.pop((topic, partition), None)
        self._snapshots.pop(partition, None)
        self._safe.pop(partition, None)
        self._assigned_at.pop(partition, None)

    def processed(self, topic: str, partition: int, next_offset: int) -> None:
        """The reconciler has applied every record of (topic, partition) below `next_offset`."""
        key = (topic, partition)
        if next_offset > self._processed.get(key, 0):
            self._processed[key] = next_offset

    def observe(self, partition: int, at: datetime, ends: dict[str, int]) -> None:
        """The broker's end offsets of `partition` in each input topic, sampled at wall time `at`."""
        snapshots = self._snapshots.get(partition)
        if snapshots is not None:
            snapshots.append(Snapshot(at, dict(ends)))
            self._advance(partition)

    def _advance(self, partition: int) -> None:
        snapshots = self._snapshots[partition]
        while snapshots and all(
            self._processed.get((topic, partition), 0) >= end for topic, end in snapshots[0].ends.items()
        ):
            self._safe[partition] = snapshots.popleft().at

    def safe_time(self, partition: int) -> datetime | None:
        """The newest wall time up to which both streams of `partition` are known to be read completely."""
        if partition in self._snapshots:
            self._advance(partition)
        return self._safe.get(partition)

    def lag_s(self, now: datetime) -> float:
        """How far behind `now` the least complete partition is known complete, in seconds: now minus its safe
        time, or, for a partition without one yet (its first end offsets not reached), minus when it was
        assigned, since nothing of it is known complete. 0 without partitions."""
        known = [self.safe_time(p) or self._assigned_at[p] for p in self._snapshots]
        return max(0.0, (now - min(known)).total_seconds()) if known else 0.0

    @property
    def partitions(self) -> set[int]:
        return set(self._snapshots)
