"""A record handed over past a hole is skipped and its partition read again from the hole (Rewinder); a
partition standing still below the broker's end offset is read again from where the agent is (TailWatch)."""

from faust.types import TP

from reconciler.adapters.rewind import FencedReadOffsets, RecoveryWatch, Rewinder, TailWatch


class Seeks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    async def __call__(self, topic: str, partition: int, offset: int, why: str) -> None:
        self.calls.append((topic, partition, offset))
        self.why = why


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_first_record_past_a_hole_seeks_its_partition_back_to_the_hole() -> None:
    seeks = Seeks()
    rewinder = Rewinder(seeks, Clock())
    assert await rewinder.past_hole("ledger.events", 2, 7)
    assert seeks.calls == [("ledger.events", 2, 7)]
    assert rewinder.skipped == 1


async def test_the_records_already_fetched_past_the_hole_are_skipped_without_another_seek() -> None:
    seeks = Seeks()
    rewinder = Rewinder(seeks, Clock())
    for _ in range(50):
        assert await rewinder.past_hole("ledger.events", 2, 7)
    assert seeks.calls == [("ledger.events", 2, 7)]
    assert rewinder.skipped == 50


async def test_a_hole_still_open_after_the_retry_interval_is_sought_again() -> None:
    seeks, clock = Seeks(), Clock()
    rewinder = Rewinder(seeks, clock, retry_after_s=1.0)
    await rewinder.past_hole("ledger.events", 2, 7)
    clock.now += 0.5
    await rewinder.past_hole("ledger.events", 2, 7)
    clock.now += 0.6
    await rewinder.past_hole("ledger.events", 2, 7)
    assert seeks.calls == [("ledger.events", 2, 7)] * 2
    assert rewinder.rewinds("ledger.events", 2) == 2


async def test_a_partition_that_never_recovers_makes_the_worker_give_up() -> None:
    seeks, clock = Seeks(), Clock()
    rewinder = Rewinder(seeks, clock, retry_after_s=1.0, max_rewinds=3)
    answers = []
    for _ in range(5):
        answers.append(await rewinder.past_hole("payments.events", 0, 300))
        clock.now += 1.5
    assert answers == [True, True, True, False, False]
    assert len(seeks.calls) == 3


async def test_holes_of_different_partitions_are_sought_separately() -> None:
    seeks = Seeks()
    rewinder = Rewinder(seeks, Clock())
    await rewinder.past_hole("ledger.events", 2, 7)
    await rewinder.past_hole("payments.events", 2, 40)
    await rewinder.past_hole("ledger.events", 3, 9)
    assert seeks.calls == [("ledger.events", 2, 7), ("payments.events", 2, 40), ("ledger.events", 3, 9)]


async def test_a_new_hole_after_progress_starts_its_count_again() -> None:
    seeks, clock = Seeks(), Clock()
    rewinder = Rewinder(seeks, clock, retry_after_s=1.0, max_rewinds=2)
    await rewinder.past_hole("ledger.events", 2, 7)
    clock.now += 2
    await rewinder.past_hole("ledger.events", 2, 7)
    rewinder.forget("ledger.events", 2)  # the record at 7 arrived
    clock.now += 2
    assert await rewinder.past_hole("ledger.events", 2, 30)
    assert rewinder.rewinds("ledger.events", 2) == 1
    assert seeks.calls[-1] == ("ledger.events", 2, 30)


class Waiting:
    def __init__(self) -> None:
        self.records = False

    def __call__(self) -> bool:
        return self.records


def watch(seeks: Seeks, clock: Clock, waiting: Waiting, gave_up: list[int], max_rewinds: int = 20) -> TailWatch:
    rewinder = Rewinder(seeks, clock, retry_after_s=1.0, max_rewinds=max_rewinds)
    return TailWatch(rewinder, clock, waiting, lambda topic, partition, offset: gave_up.append(offset), after_s=2.0)


async def test_a_partition_standing_still_below_the_end_offset_is_read_again_from_where_the_agent_is() -> None:
    seeks, clock, gave_up = Seeks(), Clock(), []
    tail = watch(seeks, clock, Waiting(), gave_up)
    await tail.observe("ledger.events", 4, 182, 184)
    clock.now += 1.9
    await tail.observe("ledger.events", 4, 182, 184)
    assert seeks.calls == []
    clock.now += 0.2
    await tail.observe("ledger.events", 4, 182, 184)
    assert seeks.calls == [("ledger.events", 4, 182)] and seeks.why == "stuck"
    assert gave_up == []


async def test_a_partition_that_moves_or_reaches_the_end_offset_is_not_read_again() -> None:
    seeks, clock = Seeks(), Clock()
    tail = watch(seeks, clock, Waiting(), [])
    for position in (100, 101, 102, 103):
        await tail.observe("payments.events", 1, position, 110)
        clock.now += 1.5
    for _ in range(5):
        await tail.observe("payments.events", 1, 110, 110)
        clock.now += 1.5
    assert seeks.calls == []


async def test_a_partition_is_not_read_again_while_the_agent_has_records_waiting() -> None:
    seeks, clock, waiting = Seeks(), Clock(), Waiting()
    tail = watch(seeks, clock, waiting, [])
    waiting.records = True
    for _ in range(4):
        await tail.observe("payments.events", 1, 50, 60)
        clock.now += 1.5
    assert seeks.calls == []
    waiting.records = False
    await tail.observe("payments.events", 1, 50, 60)
    assert seeks.calls == [("payments.events", 1, 50)]


async def test_a_partition_handed_over_starts_its_wait_again() -> None:
    seeks, clock = Seeks(), Clock()
    tail = watch(seeks, clock, Waiting(), [])
    await tail.observe("payments.events", 1, 50, 60)
    clock.now += 1.5
    tail.forget("payments.events", 1)
    await tail.observe("payments.events", 1, 50, 60)
    clock.now += 1.5
    await tail.observe("payments.events", 1, 50, 60)
    assert seeks.calls == []


async def test_a_partition_that_stays_stuck_however_often_it_is_read_again_makes_the_worker_give_up() -> None:
    seeks, clock, gave_up = Seeks(), Clock(), []
    tail = watch(seeks, clock, Waiting(), gave_up, max_rewinds=3)
    for _ in range(12):
        await tail.observe("ledger.events", 0, 7, 9)
        clock.now += 1.0
    assert len(seeks.calls) == 3
    assert gave_up and set(gave_up) == {7}


class Markers:
    """past_unreadable (Rounds.past_unreadable) of a partition whose offsets from `first` to its end are markers."""

    def __init__(self, first: int) -> None:
        self.first = first
        self.asked: list[tuple[str, int, int, int]] = []

    async def __call__(self, topic: str, partition: int, offset: int, limit: int) -> int:
        self.asked.append((topic, partition, offset, limit))
        return limit if offset >= self.first else offset


async def test_a_partition_ending_in_a_marker_gets_past_it_while_the_agent_is_busy_with_other_partitions() -> None:
    seeks, clock, waiting, markers = Seeks(), Clock(), Waiting(), Markers(first=41)
    rewinder = Rewinder(seeks, clock, retry_after_s=1.0)
    tail = TailWatch(rewinder, clock, waiting, lambda *_: None, after_s=2.0, past_unreadable=markers)
    waiting.records = True  # records of the worker's other partitions keep arriving
    await tail.observe("payments.events", 0, 41, 42)
    clock.now += 0.4
    await tail.observe("payments.events", 0, 41, 42)
    assert markers.asked == []
    clock.now += 0.2
    await tail.observe("payments.events", 0, 41, 42)
    assert markers.asked == [("payments.events", 0, 41, 42)] and seeks.calls == []


async def test_a_partition_waiting_for_a_record_asks_the_broker_once_and_is_not_read_again_while_the_agent_is_busy(
) -> None:  # fmt: skip
    seeks, clock, waiting, markers = Seeks(), Clock(), Waiting(), Markers(first=60)
    rewinder = Rewinder(seeks, clock, retry_after_s=1.0)
    tail = TailWatch(rewinder, clock, waiting, lambda *_: None, after_s=2.0, past_unreadable=markers)
    waiting.records = True
    for _ in range(10):
        await tail.observe("payments.events", 1, 50, 60)
        clock.now += 0.5
    assert markers.asked == [("payments.events", 1, 50, 60)] and seeks.calls == []


def fetch_loop_hands_on(offsets: FencedReadOffsets, tp: str, fetched: list[int]) -> list[int]:
    """What faust's fetch loop hands on of `fetched`: records below the read offset are dropped, and
    the read offset moves to each record handed on (faust.transport.consumer, _drain_messages)."""
    handed = []
    for offset in fetched:
        read = offsets[tp]
        if read is None or offset >= read:
            handed.append(offset)
            offsets[tp] = offset
    return handed


def test_without_a_fence_a_stale_batch_makes_the_fetch_loop_drop_the_records_read_again() -> None:
    offsets = FencedReadOffsets()
    offsets["ledger.events-2"] = 7  # faust's own seek back to the hole at 7
    handed = fetch_loop_hands_on(offsets, "ledger.events-2", [20, 21, *range(7, 23)])
    assert 7 not in handed and handed == [20, 21, 21, 22]


def test_a_fence_lets_the_records_read_again_through_after_a_stale_batch() -> None:
    offsets = FencedReadOffsets()
    offsets.fence("ledger.events-2", 7)
    handed = fetch_loop_hands_on(offsets, "ledger.events-2", [20, 21, *range(7, 23)])
    assert handed == [20, 21, *range(7, 23)]
    assert offsets.fenced("ledger.events-2") is None
    assert offsets["ledger.events-2"] == 22


def test_once_the_record_at_the_fence_is_through_duplicates_are_dropped_again() -> None:
    offsets = FencedReadOffsets()
    offsets.fence("ledger.events-2", 7)
    fetch_loop_hands_on(offsets, "ledger.events-2", [7, 8, 9])
    assert fetch_loop_hands_on(offsets, "ledger.events-2", [5, 6, 10]) == [10]


def test_a_seek_to_the_committed_offsets_replaces_the_fence_and_a_revocation_drops_it() -> None:
    offsets = FencedReadOffsets()
    offsets.fence("a", 7)
    offsets.fence("b", 3)
    offsets.update({"a": 2})
    assert offsets.fenced("a") is None and offsets["a"] == 2
    offsets.pop("b", None)
    assert offsets.fenced("b") is None and offsets["b"] is None


async def test_a_changelog_partition_whose_recovery_stands_still_is_read_again_from_where_the_recovery_is() -> None:
    seeks, clock, gave_up = Seeks(), Clock(), []
    watch = RecoveryWatch(seeks, clock, lambda t, p, left: gave_up.append(left), after_s=10, max_rewinds=2)
    tp, other = TP("changelog", 3), TP("changelog", 1)
    await watch.observe({tp: 120, other: 104}, {other: 271})
    clock.now += 6
    await watch.observe({tp: 120, other: 50}, {other: 325})  # the other moves on
    clock.now += 5
    await watch.observe({tp: 120, other: 0}, {other: 375})
    assert seeks.calls == [("changelog", 3, 0)] and seeks.why == "recovery"
    for _ in range(6):
        clock.now += 11
        await watch.observe({tp: 120}, {tp: -1})
    assert len(seeks.calls) == 2 and gave_up[:1] == [120], "read again twice in all, then the worker gives up"


async def test_a_recovery_that_moves_is_never_read_again() -> None:
    seeks, clock = Seeks(), Clock()
    watch = RecoveryWatch(seeks, clock, lambda t, p, left: None, after_s=10)
    for left in range(100, 0, -10):
        await watch.observe({TP("changelog", 0): left}, {TP("changelog", 0): 200 - left})
        clock.now += 9
    assert seeks.calls == []
