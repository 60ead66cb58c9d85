"""The ticker follows the consumer's assignment: a partition handed over again between two ticks (it
went to another worker and came back, with states this worker never timed) gets its timers rebuilt."""

from datetime import UTC, datetime, timedelta

from faust.types import TP

from reconciler.domain import OrderState
from reconciler.engine import Engine
from tests.reconciler.unit.fakes import InMemoryOrderStates
from tests.reconciler.unit.worker import LEDGER, PAYMENTS, POLICY, Worker, paid


def paid_elsewhere(order_id: str, seconds_ago: float) -> OrderState:
    """The stored state of an order another worker took the payment of, its deadline passed."""
    at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    result = Engine(InMemoryOrderStates(), POLICY).apply(paid(order_id, seconds_ago), 0, at)
    assert result is not None
    return result[0]


async def test_a_partition_handed_over_again_between_two_ticks_has_its_timers_rebuilt_from_the_table() -> None:
    worker = Worker()
    await worker.tick()  # partition 0 is new: its (empty) timers are built
    worker.table["o1"] = paid_elsewhere("o1", seconds_ago=30)  # written by the worker that had it meanwhile
    worker.ticker.handed({TP(PAYMENTS, 0), TP(LEDGER, 0)})
    await worker.tick()
    assert worker.statuses("o1") == ["delayed#1"]


async def test_without_a_new_assignment_a_state_that_appears_in_the_table_is_not_timed() -> None:
    """The premise of the test above: the timers come from the rebuild, not from reading the table."""
    worker = Worker()
    await worker.tick()
    worker.table["o1"] = paid_elsewhere("o1", seconds_ago=30)
    await worker.tick()
    await worker.tick()
    assert worker.statuses("o1") == []


async def test_a_partition_being_revoked_gets_no_more_timers_from_this_worker() -> None:
    worker = Worker()
    await worker.batch(worker.record(paid("o1", seconds_ago=30)))
    worker.positions.revoking([TP(PAYMENTS, 0), TP(LEDGER, 0)])
    await worker.tick()
    assert worker.statuses("o1") == []
