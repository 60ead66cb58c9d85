"""reconciler_watermark_lag_seconds says how far behind the reconciler knows the input streams complete, and the
second half of ReconcilerStalled (max(reconciler_watermark_lag_seconds) > 300) pages on it. A partition has no
safe time until the worker has processed both streams up to the first end offsets it sampled; until then nothing of
it is known complete since it was assigned, so its lag counts from the assignment. A worker stuck behind a backlog
it does not catch up with reads more and more behind, never "0 s behind"."""

import asyncio
from datetime import UTC, datetime, timedelta

from reconciler.watermarks import Watermarks
from tests.reconciler.unit.worker import INPUTS, LEDGER, PAYMENTS, Worker

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_the_watermark_lag_grows_while_a_worker_has_not_caught_up_with_its_partitions_yet() -> None:
    worker = Worker()
    worker.offsets.ends = {(PAYMENTS, 0): 500, (LEDGER, 0): 500}  # a backlog nothing has been applied of
    await worker.ticker.tick()
    await asyncio.sleep(1.2)
    await worker.ticker.tick()
    assert worker.watermarks.safe_time(0) is None, "nothing of the partition is known complete"
    lag = worker.observe.watermark_lag._value.get()
    assert lag >= 1.0, f"the worker has known nothing of its partition for 1.2 s, but the watermark lag reads {lag} s"


def test_the_lag_is_the_largest_over_the_partitions_counting_one_without_a_safe_time_from_its_assignment() -> None:
    marks = Watermarks(INPUTS)
    marks.assign(0, {}, T0)
    marks.assign(1, {}, T0 + timedelta(seconds=60))
    marks.observe(0, T0 + timedelta(seconds=100), dict.fromkeys(INPUTS, 0))  # partition 0 is complete at T0+100
    marks.observe(1, T0 + timedelta(seconds=100), dict.fromkeys(INPUTS, 7))  # partition 1 is behind its backlog
    assert marks.safe_time(0) == T0 + timedelta(seconds=100) and marks.safe_time(1) is None
    assert marks.lag_s(T0 + timedelta(seconds=400)) == 340.0, "partition 1, assigned at T0+60"
    for topic in INPUTS:
        marks.processed(topic, 1, 7)
    assert marks.lag_s(T0 + timedelta(seconds=400)) == 300.0, "both complete up to T0+100"


def test_a_worker_without_partitions_is_not_behind() -> None:
    marks = Watermarks(INPUTS)
    marks.assign(0, {}, T0)
    marks.revoke(0)
    assert marks.lag_s(T0 + timedelta(hours=1)) == 0.0
