"""A round (adapters/rounds.py): a batch of records applied, announced together, acknowledged once, written
once per order, then counted as processed; and what it does with holes, repeats, bad records, revoked
partitions, refused changelog records and ended retentions."""

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from faust.types import TP

from contracts.base import Message
from contracts.events import OrderStatus
from reconciler import handlers
from reconciler.adapters import rounds
from reconciler.adapters.faust_app import PRODUCER_REQUEST_TIMEOUT_S
from reconciler.adapters.rounds import CHANGELOG_PATIENCE_S
from reconciler.domain import Phase, Policy
from tests.reconciler.unit.worker import LEDGER, PAYMENTS, Worker, credited, paid, refused


async def test_a_round_sends_all_its_announcements_then_writes_each_order_once_then_counts_its_records() -> None:
    worker = Worker()
    events = [worker.record(paid(f"o{i}")) for i in range(3)] + [worker.record(credited(f"o{i}")) for i in range(3)]
    await worker.batch(*events)
    sends = [i for i, what in enumerate(worker.journal) if what.startswith("OrderStatusChanged")]
    writes = [i for i, what in enumerate(worker.journal) if what.startswith("changelog")]
    assert len(sends) == 3 and len(writes) == 3, "one changelog record per order, though each had two events"
    assert max(sends) < min(writes), "no state is written before the broker has every announcement"
    assert worker.positions.next_offset(PAYMENTS, 0) == 3 and worker.positions.next_offset(LEDGER, 0) == 3
    assert [worker.stored(f"o{i}").status for i in range(3)] == [OrderStatus.CREDITED] * 3  # type: ignore[union-attr]


async def test_a_record_past_one_that_never_arrived_is_skipped_and_its_partition_read_again_from_the_gap() -> None:
    worker = Worker()
    await worker.batch(worker.record(paid("o1"), offset=0), worker.record(paid("o3"), offset=2))
    assert worker.stored("o1") is not None and worker.stored("o3") is None
    assert worker.seeks == [(PAYMENTS, 0, 1)]
    assert worker.positions.next_offset(PAYMENTS, 0) == 1
    await worker.batch(worker.record(paid("o2"), offset=1), worker.record(paid("o3"), offset=2))
    assert worker.stored("o3") is not None and worker.positions.next_offset(PAYMENTS, 0) == 3


async def test_a_record_handed_over_again_after_a_seek_back_is_not_applied_twice() -> None:
    worker = Worker()
    await worker.batch(worker.record(paid("o1"), offset=0), worker.record(credited("o1"), offset=0))
    journal = list(worker.journal)
    await worker.batch(worker.record(paid("o1"), offset=0), worker.record(credited("o1"), offset=0))
    assert worker.journal == journal
    assert worker.statuses("o1") == ["credited#1"]


async def test_a_record_that_does_not_decode_is_dead_lettered_with_its_source_and_counts_as_processed() -> None:
    worker = Worker()
    bad = worker.record(paid("o1"), value=b"{not json")
    await worker.batch(bad, worker.record(paid("o2")))
    value, headers = worker.producer.dead[0]
    assert value == b"{not json" and headers["dlq_reason"].startswith(b"undecodable: value is not JSON")
    assert headers["dlq_source_topic"] == PAYMENTS.encode() and headers["dlq_source_offset"] == b"0"
    assert worker.positions.next_offset(PAYMENTS, 0) == 2 and worker.stored("o2") is not None


END_OF_TIME = datetime.max.replace(tzinfo=UTC)
"""A valid time whose deadline, or whose timer, lies past what a datetime can hold."""


@pytest.mark.parametrize(
    ("at_the_end", "next_one", "topic"),
    [
        (paid("o1").model_copy(update={"paid_at": END_OF_TIME}), paid("o2"), PAYMENTS),
        (credited("o1").model_copy(update={"credited_at": END_OF_TIME}), credited("o2"), LEDGER),
    ],
    ids=["deadline", "timer"],
)
async def test_a_record_whose_times_run_past_the_calendar_is_dead_lettered_and_the_records_after_it_are_applied(
    at_the_end: Message, next_one: Message, topic: str
) -> None:
    worker = Worker()
    bad = worker.record(at_the_end)
    await worker.batch(bad, worker.record(next_one))
    (value, headers), *others = worker.producer.dead
    assert not others and value == bad.value and headers["dlq_reason"].startswith(b"handler failed: OverflowError")
    assert headers["dlq_source_topic"] == topic.encode() and headers["dlq_source_offset"] == b"0"
    assert worker.positions.next_offset(topic, 0) == 2 and worker.stored("o2") is not None
    assert worker.stored("o1") is None and [w for w in worker.journal if "o1" in w] == ["dead letter o1"]
    assert worker.observe.dead_letters.labels("handler_failed")._value.get() == 1


async def test_records_of_a_partition_being_revoked_are_left_to_its_next_owner() -> None:
    worker = Worker()
    worker.positions.revoking([TP(PAYMENTS, 0)])
    await worker.batch(worker.record(paid("o1")), worker.record(credited("o2")))
    assert worker.stored("o1") is None and worker.stored("o2") is not None
    assert worker.positions.committable([TP(PAYMENTS, 0)]) == {TP(PAYMENTS, 0): 0}, "still committed meanwhile"


async def test_a_changelog_record_the_broker_refused_stops_the_worker_before_its_records_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def stop(what: str) -> None:
        raise SystemExit(what)

    monkeypatch.setattr(rounds, "stop", stop)
    worker = Worker()
    worker.changelog.refuse = True
    with pytest.raises(SystemExit, match="changelog"):
        await worker.batch(worker.record(paid("o1")))
    assert worker.positions.next_offset(PAYMENTS, 0) == 0


async def test_a_settled_order_leaves_the_table_once_its_retention_has_passed_in_event_time() -> None:
    worker = Worker(Policy(threshold_s=5, retention_s=60))
    await worker.batch(worker.record(paid("old", seconds_ago=120)), worker.record(credited("old", seconds_ago=119)))
    await worker.batch(worker.record(paid("new", seconds_ago=30)), worker.record(credited("new", seconds_ago=29)))
    await worker.batch(worker.record(paid("open", seconds_ago=120)))
    await worker.tick()
    assert "tombstone old" in worker.journal
    assert worker.stored("old") is None and worker.stored("new") is not None
    assert worker.stored("open").phase is Phase.RETRYING  # type: ignore[union-attr]  # unsettled orders stay
    assert worker.observe.expired_orders._value.get() == 1


async def test_a_refusal_of_an_order_never_paid_leaves_the_table_a_retention_after_it_and_a_recent_one_waits() -> None:
    worker = Worker(Policy(threshold_s=5, retention_s=60))
    stray, early = refused("stray", seconds_ago=120), refused("early", seconds_ago=20)
    await worker.batch(worker.record(stray), worker.record(early))
    await worker.batch(worker.record(paid("new", seconds_ago=10)), worker.record(credited("new", seconds_ago=9)))
    await worker.tick()
    assert "tombstone stray" in worker.journal and worker.stored("stray") is None
    assert worker.stored("early") is not None, "a refusal within the retention waits for its payment"
    await worker.batch(worker.record(paid("early", seconds_ago=19)))
    assert worker.stored("early").phase is Phase.REFUNDING  # type: ignore[union-attr]
    assert worker.statuses("early") == ["remediating#1"]


async def test_an_event_older_than_the_retention_for_an_order_no_longer_in_the_table_is_ignored() -> None:
    worker = Worker(Policy(threshold_s=5, retention_s=60))
    await worker.batch(worker.record(paid("old", seconds_ago=120)), worker.record(credited("old", seconds_ago=119)))
    await worker.tick()
    assert worker.stored("old") is None
    await worker.batch(worker.record(paid("old", seconds_ago=120)))  # a late duplicate
    await worker.tick()
    assert worker.stored("old") is None and worker.statuses("old") == ["credited#1"]
    assert worker.positions.next_offset(PAYMENTS, 0) == 2


async def test_the_overdue_count_follows_the_states_written_and_is_counted_again_after_partitions_move() -> None:
    worker = Worker()
    await worker.batch(worker.record(paid("o1", seconds_ago=30)), worker.record(paid("o2", seconds_ago=30)))
    await worker.tick()
    assert worker.states.overdue == 2
    await worker.batch(worker.record(credited("o1")))
    assert worker.states.overdue == 1
    del worker.table["o2"]  # its partition went to another worker
    worker.states.recount()
    assert worker.states.overdue == 0


async def test_the_next_round_goes_on_while_the_changelog_is_unacknowledged_and_the_records_count_only_after() -> None:
    worker = Worker()
    worker.changelog.hold = True
    await worker.batch(worker.record(paid("o1")))
    await worker.batch(worker.record(paid("o2")))
    assert worker.stored("o2") is not None, "the second round ran without waiting for the first's changelog"
    assert worker.positions.next_offset(PAYMENTS, 0) == 0
    worker.changelog.held[1].set_result(None)  # the later round's record first: nothing counts yet
    await asyncio.sleep(0)
    assert worker.positions.next_offset(PAYMENTS, 0) == 0
    worker.changelog.held[0].set_result(None)
    await asyncio.sleep(0)
    assert worker.positions.next_offset(PAYMENTS, 0) == 2


async def test_a_table_full_of_expired_orders_is_dropped_a_bounded_batch_per_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "EXPIRED_PER_ROUND", 2)
    worker = Worker(Policy(threshold_s=5, retention_s=60))
    for n in range(5):
        order_id = f"old{n}"
        await worker.batch(
            worker.record(paid(order_id, seconds_ago=120)), worker.record(credited(order_id, seconds_ago=119))
        )
    left = []
    for _ in range(3):
        await worker.tick()
        left.append(sum(worker.stored(f"old{n}") is not None for n in range(5)))
    assert left == [3, 1, 0]
    assert worker.observe.expired_orders._value.get() == 5


async def test_changelog_records_held_through_a_broker_outage_stop_the_worker_only_once_the_producer_gave_up_on_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(rounds, "time", SimpleNamespace(monotonic=lambda: now[0]))
    stops: list[str] = []
    monkeypatch.setattr(rounds, "stop", stops.append)
    worker = Worker()
    worker.changelog.hold = True
    await worker.batch(worker.record(paid("o1")))
    now[0] += PRODUCER_REQUEST_TIMEOUT_S  # the producer still retries it: the broker may come back
    worker.rounds.check_settling()
    assert stops == [], "stopped while the producer could still deliver the changelog record"
    now[0] += CHANGELOG_PATIENCE_S - PRODUCER_REQUEST_TIMEOUT_S + 1  # a producer that never answers
    worker.rounds.check_settling()
    assert len(stops) == 1 and "unacknowledged" in stops[0]
    assert worker.positions.next_offset(PAYMENTS, 0) == 0
