"""No input offset is committed before the broker holds the table changes it caused, nor past a record
the agent has not processed.

Why faust alone does not promise it (faust-streaming 0.15, at_least_once): a table write is
`changelog_topic.send_soon()`: the record goes into faust's ProducerBuffer, a queue that a background
task drains into aiokafka. The event is acked when the agent moves on, and the commit task then runs
`producer.flush()` and commits. That flush does not wait for the queue: `ProducerBuffer.flush` gives up
as soon as one record takes longer than 0.1 s to leave the queue (a loaded machine, a full aiokafka
batch, a metadata refresh) and it does not see the record the drain task has taken off the queue but
not yet handed to aiokafka; aiokafka's own flush then waits only for what it already holds. So the
offset of a payment can be committed while its changelog record is still in this process's memory, and
a SIGKILL then loses the record: the owner that restores the table after it misses the payment (the
order later looks credited without a payment and is never announced) or misses a credit (the order is
flagged although its credit was read: a false alarm), and the safe time (watermarks.py) counts the
lost record as applied because it starts a new assignment at the committed offset.

The rule here: every changelog future is tracked from the moment it is created, and before any commit
(the periodic one, on revocation, on stop) the consumer waits until the broker has acknowledged every
record sent so far. The records an event caused are sent before the event counts as processed
(batch.py writes the table, then reports the records), so they are in that set. A record the broker
refuses, or one it has not acknowledged within `ACK_TIMEOUT_S`, crashes the worker instead of
committing; the next owner replays from the last good commit.

Announcements need nothing more: a state reaches the table, and so the changelog, only once the broker
has acknowledged the status changes and commands it records, and a record counts as processed only
after that (batch.py). A kill before that acknowledgement leaves the record uncommitted (or, for a
timer, the state unwritten) and the transition happens again after recovery: the announcement may be
repeated, never lost, and a repeat carries the same deterministic event id and the same status
sequence (it is computed from the same restored state), which the notifier and the ledger and
payments drop, and which the flag count in tests/e2e/status_log.py counts once.

Input offsets are committed where the agent is, not where faust's bookkeeping is. faust-streaming's
recovery, once the tables are restored, resumes the input partitions, then seeks them to the
committed offsets (waiting for the broker), then resumes the flow, and resuming the flow empties every
stream's queue (mode's FlowControlEvent.resume clears the queues it manages). Records fetched in
between are counted as read by faust's fetch loop and dropped from the queue, so they never reach the
agent (seen on Apache Kafka: a worker taking over ledger.events[1] at 176 processed 176-180, then 191
onwards; 181-190 were never processed). faust then fills that "gap" (`_add_gap`) as if acked, so
`_new_offset` commits past records nobody processed: the next owner starts after them, and their
payments and credits are lost for good (credits without payment, missed and false flags). The rules
here:
- an input partition is resumed only once perform_seek has returned and the flow has resumed, so
  nothing of it is fetched before the queues are emptied and the agent starts at the committed offset;
- an input partition the group never committed is sought to its first offset: aiokafka's
  seek_to_committed leaves it wherever its fetcher was (seen: a restarted worker began a never
  committed ledger.events[3] at 32, the records appended while the killed worker ran);
- every seek runs on the consumer's own thread (`seek_wait`): faust keeps aiokafka's consumer on a
  thread with its own event loop, and faust's `Consumer.seek` calls aiokafka's seek from the app's
  thread, which resolves futures of the other loop without waking it: the fetcher may go on from where
  it was, or stall, for that partition (seen: a seek back to a hole repeated for minutes with nothing
  arriving);
- the offset committed for an input partition is ProcessedPositions': the agent reports each record
  it has handled (or dead-lettered), counted only in order from the offset the assignment started
  at. Changelog and other partitions keep faust's offsets.
If a record still reaches the agent past a hole, the agent does not apply it (rewind.py): it skips it
and reads the partition again from the hole, and stops the process only if that never fills it. Its
position, and so its commits, end at the hole. Applying the record instead would let the table and
the safe time (watermarks.py) run past records never read: credits without payment, missed flags and
false flags.
A revoked partition is committed no more, but its position is kept aside: when it comes back, it
starts at the later of the committed offset and that position. Starting past the committed offset is
sound because this worker processed every record below its position, and the in-memory table keeps
those changes across a rebalance (the memory store drops nothing on revocation; the changelog restore
then adds whatever a later owner wrote). It matters because faust, seeking a partition that stayed
with this worker back to the committed offset, may skip the records this worker already processed.
A position never runs ahead of the table either: the agent reports a record after its table writes
are sent, and the commit then waits for their acknowledgement as above.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar

import faust
from faust.exceptions import ProducerSendError
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerT

from reconciler.adapters.rewind import FencedReadOffsets

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 60.0


class ChangelogAcks:
    """Changelog records sent and not yet acknowledged by the broker; remembers a refusal for good."""

    def __init__(self, timeout_s: float = ACK_TIMEOUT_S) -> None:
        self._pending: set[asyncio.Future[Any]] = set()
        self._failure: BaseException | None = None
        self._timeout_s = timeout_s

    def track(self, sent: asyncio.Future[Any]) -> None:
        if sent.done():
            self._settled(sent)
        else:
            self._pending.add(sent)
            sent.add_done_callback(self._settled)

    def _settled(self, sent: asyncio.Future[Any]) -> None:
        self._pending.discard(sent)
        if self._failure is None and not sent.cancelled() and sent.exception() is not None:
            self._failure = sent.exception()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def acknowledged(self) -> None:
        """Return once every record sent so far is acknowledged; raise ProducerSendError if one was refused
        (then the changelog has a hole and no later offset may be committed either) or is overdue."""
        waiting = list(self._pending)
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=self._timeout_s)
            if late:
                raise ProducerSendError(f"{len(late)} changelog records unacknowledged after {self._timeout_s:.0f}s")
        if self._failure is not None:
            raise ProducerSendError(f"a changelog record was refused: {self._failure!r}") from self._failure


class ProcessedPositions:
    """Per input partition of this worker's assignment: the offset below which the agent has processed
    every record, counted in order from where the assignment started (the group's committed offset)."""

    def __init__(self, topics: Iterable[str]) -> None:
        self._topics = frozenset(topics)
        # None: the start is not known yet; the first record processed sets it.
        self._next: dict[tuple[str, int], int | None] = {}
        # Positions of partitions revoked from this worker, still followed in case they come back.
        self._previous: dict[tuple[str, int], int] = {}

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

    def forget(self, tps: Iterable[TP]) -> None:
        """The partitions were revoked: nothing is committed for them until they are assigned again."""
        for tp in tps:
            position = self._next.pop((tp.topic, tp.partition), None)
            if position is not None:
                self._previous[(tp.topic, tp.partition)] = position

    def keep_only(self, tps: Iterable[TP]) -> None:
        keep = {(tp.topic, tp.partition) for tp in tps}
        self.forget([tp for tp in _tps(self._next) if (tp.topic, tp.partition) not in keep])

    def processed(self, topic: str, partition: int, offset: int) -> None:
        """The agent is done with the record at `offset`: its announcements are acknowledged and its table
        writes sent (batch.py). A record of a partition not (or no longer) assigned counts for nothing."""
        key = (topic, partition)
        if key not in self._next:
            if self._previous.get(key) == offset:  # records in flight when the partition was revoked
                self._previous[key] = offset + 1
            return
        expected = self._next[key]
        if expected is None or offset == expected:
            self._next[key] = offset + 1

    def assigned(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._next

    def next_offset(self, topic: str, partition: int) -> int | None:
        """The offset of the next record to process in order, if the partition is assigned and its start known."""
        return self._next.get((topic, partition))

    def missing(self, topic: str, partition: int, offset: int) -> int | None:
        """The first offset the agent has not processed, when the record at `offset` comes after it."""
        expected = self._next.get((topic, partition))
        return expected if expected is not None and offset > expected else None

    def committable(self, tps: Iterable[TP]) -> dict[TP, int]:
        """The offsets to commit for the input partitions among `tps`."""
        found: dict[TP, int] = {}
        for tp in tps:
            position = self._next.get((tp.topic, tp.partition))
            if self.is_input(tp) and position is not None:
                found[tp] = position
        return found


def _tps(keys: Iterable[tuple[str, int]]) -> list[TP]:
    return [TP(topic, partition) for topic, partition in keys]


class AcknowledgedCommitConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]  # faust is untyped here
    """faust's aiokafka consumer with three changes: input partitions resume only once the seek to the
    committed offsets is done; an input partition is committed at its ProcessedPositions offset, never
    at faust's gap-filled one; every commit waits for the changelog. faust calls `_handle_attached` with
    the offsets about to be committed, right before committing them, and crashes the consumer instead
    of committing when it raises ProducerSendError."""

    _resume_after_seek: set[TP] | None = None
    _sought = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = FencedReadOffsets()

    async def rewind(self, tp: TP, offset: int) -> None:
        """Read `tp` again from `offset`, which the agent is missing (rewind.py)."""
        await self.seek_wait({tp: offset})
        if offset > 0:
            self._read_offset.fence(tp, offset)

    def _positions(self) -> ProcessedPositions:
        positions = self.transport.processed_positions
        assert isinstance(positions, ProcessedPositions)
        return positions

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        """Recovery resumes the input partitions, then seeks them, then resumes the flow (which empties
        the streams' queues): input partitions are held back until both are done."""
        tps = set(tps)
        inputs = {tp for tp in tps if self._positions().is_input(tp)}
        if inputs:
            self._resume_after_seek = (self._resume_after_seek or set()) | inputs
            self._sought = False
        super().resume_partitions(tps - inputs)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        self._sought = True
        self._resume_held_back()

    def resume_flow(self) -> None:
        super().resume_flow()
        self._resume_held_back()

    def _resume_held_back(self) -> None:
        if self._sought and self.flow_active and self.app.flow_control.is_active() and self._resume_after_seek:
            resuming, self._resume_after_seek = self._resume_after_seek, None
            super().resume_partitions(resuming & set(self.assignment()))

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek to the committed offsets, and an input partition the group never committed to its first
        offset (aiokafka leaves that one wherever its fetcher was)."""
        committed: Mapping[TP, int] = await super().seek_to_committed()
        positions = self._positions()
        starts: dict[TP, int | None] = dict(committed)
        uncommitted = [tp for tp, offset in committed.items() if positions.is_input(tp) and not offset]
        if uncommitted:
            earliest = await self.earliest_offsets(*uncommitted)
            for tp in uncommitted:
                starts[tp] = earliest[tp]
            await self.seek_wait({tp: earliest[tp] for tp in uncommitted})
        positions.started(starts)
        return committed

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        await self.transport.before_revoke()  # nothing staged stays behind a partition that moves
        await super().on_partitions_revoked(revoked)
        self._positions().forget(revoked)
        if self._resume_after_seek:
            self._resume_after_seek -= set(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self._positions().keep_only(assigned)
        await super().on_partitions_assigned(assigned, generation_id)
        self.transport.on_assigned(assigned)

    def _filter_committable_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        tps = list(tps)
        positions = self._positions()
        faust_offsets = super()._filter_committable_offsets(tps)
        offsets = {tp: offset for tp, offset in faust_offsets.items() if not positions.is_input(tp)}
        for tp, position in positions.committable(tps).items():
            if self._should_commit(tp, position):
                offsets[tp] = position
        return offsets

    async def _handle_attached(self, commit_offsets: Mapping[TP, int]) -> None:
        await super()._handle_attached(commit_offsets)
        acks = self.transport.changelog_acks
        assert isinstance(acks, ChangelogAcks)
        await acks.acknowledged()


class AcknowledgedCommitTransport(faust_aiokafka.Transport):  # type: ignore[misc]
    """The aiokafka transport with AcknowledgedCommitConsumer, sharing one ChangelogAcks with the table."""

    Consumer: ClassVar[type[ConsumerT]] = AcknowledgedCommitConsumer

    def __init__(self, app: faust.App, acks: ChangelogAcks, positions: ProcessedPositions) -> None:
        super().__init__(app.conf.broker_consumer, app)
        self.changelog_acks = acks
        self.processed_positions = positions
        self.before_revoke: Callable[[], Awaitable[None]] = _nothing
        self.on_assigned: Callable[[set[TP]], None] = lambda assigned: None


async def _nothing() -> None:
    return None


def acknowledge_before_commit(app: faust.App, acks: ChangelogAcks, positions: ProcessedPositions) -> None:
    """Give `app` the consumer that waits for `acks` before committing and commits input partitions at
    `positions`; call before anything uses it."""
    app.transport = AcknowledgedCommitTransport(app, acks, positions)
