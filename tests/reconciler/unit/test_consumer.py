"""The consumer (adapters/consumer.py): input partitions committed where the agent is, never at faust's
gap-filled offsets; resumed only once sought and after the flow resumed; a never committed one read from its
first offset; a read again sought on the consumer's thread and fenced."""

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP
from intervaltree import IntervalTree
from mode.utils.queues import FlowControlEvent

from reconciler.adapters.consumer import ReconcilerConsumer
from reconciler.adapters.positions import ProcessedPositions
from reconciler.adapters.rewind import FencedReadOffsets

PAYMENTS, CHANGELOG = "payments.events", "credited-reconciler-order-state-changelog"


def consumer_at(positions: ProcessedPositions, committed: dict[TP, int], acked: dict[TP, list[int]]) -> Any:
    """The commit consumer with faust's ack bookkeeping as given and nothing else (no broker)."""
    consumer = ReconcilerConsumer.__new__(ReconcilerConsumer)
    consumer.transport = SimpleNamespace(positions=positions)
    consumer.log = SimpleNamespace(dev=lambda *args, **kwargs: None)
    consumer.app = SimpleNamespace(flow_control=FlowControlEvent())
    consumer.flow_active, consumer.can_resume_flow, consumer.suspend_flow = True, asyncio.Event(), asyncio.Event()
    consumer._committed_offset = defaultdict(lambda: None, committed)
    consumer._acked = defaultdict(list, {tp: list(offsets) for tp, offsets in acked.items()})
    consumer._acked_index = defaultdict(set, {tp: set(offsets) for tp, offsets in acked.items()})
    consumer._gap = defaultdict(IntervalTree)
    return consumer


def test_an_input_partition_is_committed_where_the_agent_is_not_where_faust_counted_acks() -> None:
    tp = TP(PAYMENTS, 5)
    positions = ProcessedPositions([PAYMENTS])
    positions.started({tp: 20})
    positions.advance(PAYMENTS, 5, 23)  # the rounds made 20 to 22 durable
    consumer = consumer_at(positions, {tp: 20}, {tp: [20, 21, 22, 23, 24]})
    assert consumer._filter_committable_offsets([tp]) == {tp: 23}


def test_records_faust_counts_as_done_but_the_agent_never_applied_are_not_committed() -> None:
    tp, changelog = TP(PAYMENTS, 5), TP(CHANGELOG, 5)
    positions = ProcessedPositions([PAYMENTS])
    positions.started({tp: 20})  # 20 to 48 never reached the agent; 49 and 50 did, past the hole: skipped
    consumer = consumer_at(positions, {tp: 20}, {tp: [49, 50], changelog: [7, 8]})
    consumer._gap[tp].addi(21, 50)  # faust filled the hole it saw in the fetched offsets
    assert consumer._filter_committable_offsets([tp, changelog]) == {changelog: 9}


def test_a_partition_being_revoked_is_left_alone_but_committed_until_it_is_gone() -> None:
    tp = TP(PAYMENTS, 5)
    positions = ProcessedPositions([PAYMENTS])
    positions.started({tp: 20})
    positions.advance(PAYMENTS, 5, 21)
    positions.started({tp: 10})  # a seek back within the same assignment keeps the position
    positions.revoking([tp])
    assert not positions.assigned(PAYMENTS, 5) and positions.committable([tp]) == {tp: 21}
    positions.forget([tp])
    positions.advance(PAYMENTS, 5, 22)
    assert positions.committable([tp]) == {}
    positions.started({tp: 30})
    assert positions.assigned(PAYMENTS, 5) and positions.committable([tp]) == {tp: 30}
    positions.keep_only([TP(PAYMENTS, 1)])
    assert positions.committable([tp]) == {}


def test_a_partition_that_comes_back_resumes_where_this_worker_was_when_the_group_committed_less() -> None:
    tp = TP(PAYMENTS, 4)
    positions = ProcessedPositions([PAYMENTS])
    positions.started({tp: 200})
    positions.advance(PAYMENTS, 4, 251)
    positions.forget([tp])
    positions.started({tp: 203})  # faust then skips 203 to 250: this worker applied them already
    assert positions.next_offset(PAYMENTS, 4) == 251


def test_a_partition_the_group_never_committed_starts_at_the_first_record_applied() -> None:
    tp = TP(PAYMENTS, 2)
    positions = ProcessedPositions([PAYMENTS])
    positions.started({tp: None})  # aiokafka's answer when nothing is committed
    assert positions.committable([tp]) == {} and positions.assigned(PAYMENTS, 2)
    positions.advance(PAYMENTS, 2, 1)
    assert positions.committable([tp]) == {tp: 1}


class FakeConsumerThread:
    """The broker side of the consumer: an assignment and the group's committed offsets."""

    def __init__(self, assignment: set[TP], committed: dict[TP, int | None]) -> None:
        self._assignment, self.committed = assignment, committed
        self.seeking = asyncio.Event()
        self.answer = asyncio.Event()

        self.earliest: dict[TP, int] = {}
        self.sought: dict[TP, int] = {}

    def assignment(self) -> set[TP]:
        return self._assignment

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.earliest[tp] for tp in tps}

    def seek(self, tp: TP, offset: int) -> None:
        raise AssertionError("aiokafka's seek called from the app's thread: its fetcher may never see it")

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        """The seek on the consumer's own thread, waiting for the new positions."""
        self.sought.update(partitions)

    async def seek_to_committed(self) -> dict[TP, int | None]:
        self.seeking.set()
        await self.answer.wait()
        return self.committed


async def test_input_partitions_resume_only_once_sought_and_after_the_flow_resumed() -> None:
    tp, changelog = TP(PAYMENTS, 5), TP(CHANGELOG, 5)
    positions = ProcessedPositions([PAYMENTS])
    consumer = consumer_at(positions, {}, {})
    consumer._thread = FakeConsumerThread({tp, changelog}, {tp: 20})
    consumer._active_partitions, consumer._paused_partitions = set(), {tp, changelog}
    consumer._read_offset = defaultdict(lambda: None)
    consumer.app.flow_control.suspend()  # a rebalance: faust's recovery resumes, seeks, then resumes the flow
    consumer.flow_active = False
    consumer.resume_partitions({tp, changelog})
    assert consumer._active_partitions == {changelog}
    seek = asyncio.create_task(consumer.perform_seek())
    await asyncio.wait_for(consumer._thread.seeking.wait(), timeout=5)
    assert consumer._active_partitions == {changelog}, "no input record is fetched while the seek is pending"
    consumer._thread.answer.set()
    await asyncio.wait_for(seek, timeout=5)
    assert consumer._active_partitions == {changelog}, "resuming the flow will empty the streams' queues"
    consumer.app.flow_control.resume()
    consumer.resume_flow()
    assert consumer._active_partitions == {tp, changelog}
    assert positions.committable([tp]) == {tp: 20}


async def test_an_input_partition_the_group_never_committed_is_read_from_its_first_offset() -> None:
    tp, other = TP(PAYMENTS, 3), TP(PAYMENTS, 4)
    positions = ProcessedPositions([PAYMENTS])
    consumer = consumer_at(positions, {}, {})
    consumer._thread = FakeConsumerThread({tp, other}, {tp: None, other: 12})
    consumer._thread.earliest = {tp: 0}
    consumer._thread.answer.set()
    consumer._active_partitions, consumer._paused_partitions = set(), set()
    consumer._read_offset = defaultdict(lambda: None)
    await consumer.perform_seek()
    assert consumer._thread.sought == {tp: 0}, "aiokafka would go on from wherever its fetcher was"
    assert positions.next_offset(PAYMENTS, 3) == 0, "a record past the start is a hole, not a start"
    assert positions.committable([tp, other]) == {tp: 0, other: 12}


async def test_a_partition_read_again_from_a_hole_is_sought_on_the_consumers_thread_and_fenced() -> None:
    tp = TP(PAYMENTS, 3)
    consumer = consumer_at(ProcessedPositions([PAYMENTS]), {}, {})
    consumer._thread = FakeConsumerThread({tp}, {tp: 7})
    consumer._read_offset = FencedReadOffsets()
    consumer._read_offset[tp] = 21  # the fetch loop's last record of a batch fetched before the seek
    await consumer.rewind(tp, 7)
    assert consumer._thread.sought == {tp: 7}
    assert consumer._read_offset[tp] == 7 and consumer._read_offset.fenced(tp) == 7


def test_a_partition_revoked_and_assigned_again_in_one_rebalance_is_the_agents_again_where_it_was() -> None:
    kept, moved = TP(PAYMENTS, 1), TP(PAYMENTS, 2)
    positions = ProcessedPositions([PAYMENTS])
    positions.started({kept: 5, moved: 7})
    positions.advance(PAYMENTS, 1, 9)
    positions.revoking([kept, moved])  # a rebalance revokes everything first
    positions.keep_only([kept])
    positions.started({kept: 6})  # faust seeks it back to the committed offset
    assert positions.assigned(PAYMENTS, 1) and positions.next_offset(PAYMENTS, 1) == 9
    assert not positions.assigned(PAYMENTS, 2) and positions.committable([moved]) == {}
