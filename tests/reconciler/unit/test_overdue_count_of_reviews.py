"""The overdue gauge (`reconciler_orders_overdue`, which pages OrdersOverdue) and risk review: a hold past its
expected time is not counted (README, known limits), and neither is an order the risk team rejected while it is
blocked and refunded: the user was never owed its credit, so no credit deadline of it has passed."""

from datetime import UTC, datetime, timedelta

from contracts.events import OrderHeld, OrderReviewRejected
from reconciler.domain import Phase
from tests.reconciler.unit.worker import Worker, refused


def held(order_id: str, seconds_ago: float) -> OrderHeld:
    at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return OrderHeld(
        order_id=order_id, user_id="u1", amount=60000, currency="CNY", channel="card", paid_at=at,
        reason="first top-up above 50000 minor units", held_at=at, expected_release_at=at + timedelta(seconds=1),
    )  # fmt: skip


def rejected(order_id: str) -> OrderReviewRejected:
    return OrderReviewRejected(order_id=order_id, user_id="u1", reason="stolen card", rejected_at=datetime.now(UTC))


async def test_an_order_rejected_in_risk_review_is_not_counted_overdue_while_it_is_blocked_and_refunded() -> None:
    worker = Worker()
    await worker.batch(worker.record(held("r1", seconds_ago=30)))
    await worker.tick()
    assert worker.statuses("r1") == ["under_review#1", "delayed#2"], "the hold went past its time"
    assert worker.states.overdue == 0, "a hold past its expected time is not counted"
    await worker.batch(worker.record(rejected("r1")))
    assert worker.stored("r1").phase is Phase.BLOCKING  # type: ignore[union-attr]
    assert worker.states.overdue == 0, "a rejection makes nothing overdue"
    await worker.batch(worker.record(refused("r1")))
    assert worker.stored("r1").phase is Phase.REFUNDING  # type: ignore[union-attr]
    assert worker.states.overdue == 0
    worker.states.recount()
    assert worker.states.overdue == 0, "nor counted again after partitions move"
