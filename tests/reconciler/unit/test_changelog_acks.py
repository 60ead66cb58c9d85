"""What the consumer commits: after the changelog is acknowledged (ChangelogAcks), and for an input
partition only what the agent processed (ProcessedPositions)."""

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.exceptions import ProducerSendError
from faust.types import TP
from intervaltree import IntervalTree
from mode.utils.queues import FlowControlEvent

from reconciler.adapters.commits import AcknowledgedCommitConsumer, ChangelogAcks, ProcessedPositions
from reconciler.adapters.rewind import FencedReadOffsets


async def test_a_commit_waits_until_every_record_sent_before_it_is_acknowledged() -> None:
    acks = ChangelogAcks()
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    acks.track(first)
    acks.track(second)
    waiting = asyncio.create_task(acks.acknowledged())
    first.set_result("acknowledged")
    await asyncio.sleep(0)
    assert not waiting.done()
    second.set_result("acknowledged")
    await asyncio.wait_for(waiting, timeout=5)
    assert acks.pending == 0


async def test_records_sent_after_the_commit_began_do_not_hold_it_up() -> None:
    acks = ChangelogAcks()
    loop = asyncio.get_running_loop()
    earlier = loop.create_future()
    acks.track(earlier)
    waiting = asyncio.create_task(acks.acknowledged())
    await asyncio.sleep(0)
    acks.track(loop.create_future())
    earlier.set_result("acknowledged")
    await asyncio.wait_for(waiting, timeout=5)
    assert acks.pending == 1


async def test_a_refused_record_fails_that_commit_and_every_later_one() -> None:
    acks = ChangelogAcks()
    loop = asyncio.get_running_loop()
    refused = loop.create_future()
    acks.track(refused)
    refused.set_exception(ConnectionError("broker went away"))
    for _ in range(2):
        with pytest.raises(ProducerSendError, match="refused"):
            await acks.acknowledged()
    assert acks.pending == 0


async def test_a_record_never_acknowledged_fails_the_commit_after_the_timeout() -> None:
    acks = ChangelogAcks(timeout_s=0.05)
    acks.track(asyncio.get_running_loop().create_future())
    with pytest.raises(ProducerSendError, match="unacknowledged"):
        await acks.acknowledged()


async def test_a_record_already_acknowledged_when_tracked_is_not_waited_for() -> None:
    acks = ChangelogAcks()
    done = asyncio.get_running_loop().create_future()
    done.set_result("acknowledged")
    acks.track(done)
    assert acks.pending == 0
    await asyncio.wait_for(acks.acknowledged(), timeout=5)


PAYMENTS, CHANGELOG = "payments.events", "credited-reconciler-order-state-changelog"


def consumer_at(positions: ProcessedPositions, committed: dict[TP, int], acked: dict[TP, list[int]]) -> Any:
    """The commit consumer with faust's ack bookkeeping as given and nothing else (no broker)."""
    consumer = AcknowledgedCommitConsumer.__new__(AcknowledgedCommitConsumer)
    consumer.transport = SimpleNamespace(processed_positions=positions)
    consumer.log = SimpleNamespace(dev=lambda *args, **kwargs: None)
    consumer.app = SimpleNamespace(flow_control=FlowControlEvent())
    consumer.flow_active, consumer.can_resume_flow, consumer.suspend_flow = True, asyncio.Event(), asyncio.Event()
    consumer._committed_offset = defaultdict(lambda: None, committed)
    consumer._acked = defaultdict(list, {tp: list(offsets) for tp, offsets in acked.items()})
    consumer._acked_index = defaultdict(set, {tp: set(offsets) for tp, offsets in acked.items()})
    consumer._gap = defaultdict(IntervalTree)
    return consumer


def test_an_input_partition_is_committed_at_what_the_agent_processed_in_order_since_it_was_assigned() -> None:
    tp = TP(PAYMENTS, 5)
    positions = ProcessedPositions([PAYMENTS])
    positions.started({tp: 20})
    for offset in (18, 19, 20, 21, 22):  # 18 and 19: records of the seek before, replayed
        positions.processed(PAYMENTS, 5, offset)
    consumer = consumer_at(positions, {tp: 20}, {tp: [20, 21, 22, 23, 24]})
    assert consumer._filter_committable_offsets([tp]) == {tp: 23}


def test_records_faust_counts_as_done_but_the_agent_never_processed_are_not_committed() -> None:
    tp, changelog = TP(PAYMENTS, 5), TP(CHANGELOG, 5)
    positions = ProcessedPositions([PAYMENTS])
    positions.started({tp: 20})
    assert positions.missing(PAYMENTS, 5, 49) == 20  # 20 to 48 never reached the agent
    positions.processed(PAYMENTS, 5, 49)
    positions.processed(PAYMENTS, 5, 50)
    consumer = consumer_at(positions, {tp: 20}, {tp: [49, 50], changelog: [7, 8]})
    consumer._gap[tp].addi(21, 50)  # faust filled the hole it saw in the fetched offsets
    assert consumer._filter_committable_offsets([tp, changelog]) == {changelog: 9}


def test_a_partition_is_not_committed_once_revoked_and_starts_again_where_the_group_committed() -> None:
    tp = TP(PAYMENTS, 5)
    positions = ProcessedPositions([PAYMENTS])
    positions.started({tp: 20})
    positions.processed(PAYMENTS, 5, 20)
    positions.started({tp: 10})  # a seek back within the same assignment keeps the position
    assert positions.committable([tp]) == {tp: 21}
    positions.forget([tp])
    positions.processed(PAYMENTS, 5, 21)
    assert positions.committable([tp]) == {}
    positions.started({tp: 30})
    positions.processed(PAYMENTS, 5, 30)
    assert positions.committable([tp]) == {tp: 31}
    positions.keep_only([TP(PAYMENTS, 1)])
    assert positions.committable([tp]) == {}


def test_a_partition_that_comes_back_resumes_where_this_worker_was_when_the_group_committed_less() -> None:
    tp = TP(PAYMENTS, 4)
    positions = ProcessedPositions([PAYMENTS])
    positions.started({tp: 200})
    for offset in range(200, 240):
        positions.processed(PAYMENTS, 4, offset)
    positions.forget([tp])
    for offset in range(240, 251):  # in flight when the partition was revoked
        positions.processed(PAYMENTS, 4, offset)
    positions.started({tp: 203})  # faust then skips 203 to 250: this worker processed them already
    assert positions.missing(PAYMENTS, 4, 251) is None
    assert positions.missing(PAYMENTS, 4, 210) is None, "a replay of what this worker processed is no hole"
    positions.processed(PAYMENTS, 4, 251)
    assert positions.committable([tp]) == {tp: 252}


def test_a_partition_the_group_never_committed_starts_at_the_first_record_processed() -> None:
    tp = TP(PAYMENTS, 2)
    positions = ProcessedPositions([PAYMENTS])
    positions.started({tp: None})  # aiokafka's answer when nothing is committed
    assert positions.committable([tp]) == {}
    positions.processed(PAYMENTS, 2, 0)
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
    assert positions.missing(PAYMENTS, 3, 32) == 0, "a record past the start is a hole, not a start"
    positions.processed(PAYMENTS, 3, 32)
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
