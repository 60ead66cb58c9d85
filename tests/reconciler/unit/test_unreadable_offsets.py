"""Offsets that hand over no record: a transaction's commit or abort marker (`credited dlq replay` writes to the
reconciler's input topics in transactions on Apache Kafka). The record after one is applied, and a partition that
ends with one reaches its end and keeps its safe time moving."""

from tests.reconciler.unit.worker import LEDGER, PAYMENTS, Worker, paid


async def test_a_record_past_a_transaction_marker_is_read_again_from_itself_and_applied() -> None:
    worker = Worker()
    worker.offsets.unreadable = {(PAYMENTS, 0, 1)}  # offset 0: a replayed dead letter; 1: its commit marker
    await worker.batch(worker.record(paid("replayed"), offset=0))
    await worker.batch(worker.record(paid("next"), offset=2))
    assert worker.stored("next") is None  # not applied past what it could not yet tell from a hole
    assert worker.offsets.asked == [(PAYMENTS, 0, 1, 2)]
    assert worker.seeks == [(PAYMENTS, 0, 2)]  # read again from the record, not from the marker
    assert worker.positions.next_offset(PAYMENTS, 0) == 2
    await worker.batch(worker.record(paid("next"), offset=2))
    assert worker.stored("next") is not None
    assert worker.positions.next_offset(PAYMENTS, 0) == 3


async def test_a_record_missing_before_a_marker_is_still_read_again_from_where_it_is_missing() -> None:
    worker = Worker()
    worker.offsets.unreadable = {(PAYMENTS, 0, 2)}  # offset 1 is a record faust never handed over
    await worker.batch(worker.record(paid("first"), offset=0))
    await worker.batch(worker.record(paid("after_marker"), offset=3))
    assert worker.seeks == [(PAYMENTS, 0, 1)]
    assert worker.positions.next_offset(PAYMENTS, 0) == 1


async def test_a_partition_that_ends_with_a_marker_reaches_its_end_and_its_safe_time_moves() -> None:
    worker = Worker()
    worker.ticker.tail._after_s = 0.0  # judge a standstill at the second look
    await worker.batch(worker.record(paid("replayed"), offset=0))
    worker.offsets.unreadable = {(PAYMENTS, 0, 1)}
    worker.next[PAYMENTS] = 2  # the broker's end offset counts the marker
    for _ in range(3):
        await worker.tick()
    assert worker.seeks == []
    assert worker.positions.next_offset(PAYMENTS, 0) == 2
    assert worker.watermarks.safe_time(0) is not None


async def test_without_markers_a_hole_is_read_again_from_the_hole_as_before() -> None:
    worker = Worker()
    await worker.batch(worker.record(paid("first"), offset=0))
    await worker.batch(worker.record(paid("third"), offset=2))
    assert worker.seeks == [(PAYMENTS, 0, 1)]
    assert worker.positions.next_offset(PAYMENTS, 0) == 1
    assert worker.positions.next_offset(LEDGER, 0) == 0
