"""Where the agent is in each input partition of this worker's assignment: the offset below which it has
processed every record, in order. The consumer commits input partitions here, never at faust's own offsets
(consumer.py says why), and a record that arrives past this offset is a hole, read again (rewind.py)."""

from collections.abc import Iterable, Mapping

from faust.types import TP


class ProcessedPositions:
    """Per input partition of this worker's assignment: the offset below which the agent has processed
    every record, counted in order from where the assignment started (the group's committed offset)."""

    def __init__(self, topics: Iterable[str]) -> None:
        self._topics = frozenset(topics)
        # None: the start is not known yet; the first record processed sets it.
        self._next: dict[tuple[str, int], int | None] = {}
        # Positions of partitions revoked from this worker, kept in case they come back.
        self._previous: dict[tuple[str, int], int] = {}
        self._revoking: set[tuple[str, int]] = set()

    def is_input(self, tp: TP) -> bool:
        return tp.topic in self._topics

    def started(self, committed: Mapping[TP, int | None]) -> None:
        """The consumer was positioned at the group's committed offsets. A partition already tracked
        keeps its position: that is a seek back within the same assignment, not a new start. A partition
        that comes back starts at the later of the committed offset and its position here before."""
        for tp, offset in committed.items():
            key = (tp.topic, tp.partition)
            if self.is_input(tp) and key not in self._next:
                start = offset if offset is not None and offset >= 0 else None
                before = self._previous.pop(key, None)
                self._next[key] = before if before is not None and (start is None or before > start) else start

    def revoking(self, tps: Iterable[TP]) -> None:
        """The partitions are being revoked: the agent and the ticker leave them alone from now on, and they
        are still committed (faust commits during the revocation) until `forget`."""
        self._revoking |= {(tp.topic, tp.partition) for tp in tps}

    def forget(self, tps: Iterable[TP]) -> None:
        """The partitions were revoked: nothing is committed for them until they are assigned again."""
        for tp in tps:
            key = (tp.topic, tp.partition)
            self._revoking.discard(key)
            position = self._next.pop(key, None)
            if position is not None:
                self._previous[key] = position

    def keep_only(self, tps: Iterable[TP]) -> None:
        """The new assignment: partitions not in it are forgotten, those in it are no longer being revoked
        (a rebalance revokes every partition, then assigns some of them again)."""
        keep = {(tp.topic, tp.partition) for tp in tps}
        self.forget([TP(t, p) for t, p in self._next if (t, p) not in keep])
        self._revoking.clear()

    def advance(self, topic: str, partition: int, next_offset: int) -> None:
        """The agent has made durable every record of the partition below `next_offset` (rounds.py)."""
        if (topic, partition) in self._next:
            self._next[(topic, partition)] = next_offset

    def assigned(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._next and (topic, partition) not in self._revoking

    def next_offset(self, topic: str, partition: int) -> int | None:
        """The offset of the next record to process in order, if the partition is assigned and its start known."""
        return self._next.get((topic, partition))

    def committable(self, tps: Iterable[TP]) -> dict[TP, int]:
        """The offsets to commit for the input partitions among `tps`."""
        found: dict[TP, int] = {}
        for tp in tps:
            position = self._next.get((tp.topic, tp.partition))
            if self.is_input(tp) and position is not None:
                found[tp] = position
        return found
