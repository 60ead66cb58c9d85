"""What the reconciler sends must always be a message its consumers accept, and a send the broker refuses
must be sent again: two bugs found by reading the code (issue 14), and the rule behind the first."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from contracts.commands import BlockCredit, GrantCompensation, RetryCredit
from contracts.events import CreditRejected, OrderHeld, OrderReleased, OrderReviewRejected
from reconciler.domain import Phase, Policy
from tests.reconciler.unit.worker import Worker, credited, paid

LEDGER_PREFIX = "blocked: "  # the ledger answers a BlockCredit with a CreditRejected saying this, then its reason


def held(order_id: str) -> OrderHeld:
    now = datetime.now(UTC)
    return OrderHeld(
        order_id=order_id, user_id="u1", amount=60000, currency="CNY", channel="card", paid_at=now,
        reason="first top-up above 50000", held_at=now, expected_release_at=now + timedelta(minutes=15),
    )  # fmt: skip


async def test_a_review_rejected_with_a_200_character_reason_blocks_the_credit_and_the_partition_goes_on() -> None:
    worker = Worker()
    reason = ("风控复核未通过" + "该账户近期存在多笔异常充值记录需要人工进一步核实" * 9)[:200]  # the API accepts 200
    rejected = OrderReviewRejected(order_id="ord_1", user_id="u1", reason=reason, rejected_at=datetime.now(UTC))
    await worker.batch(worker.record(held("ord_1")), worker.record(rejected))
    await worker.batch(worker.record(paid("ord_2")), worker.record(credited("ord_2")))
    blocks = [m for topic, m in worker.producer.sent if isinstance(m, BlockCredit)]
    assert len(blocks) == 1
    echo = CreditRejected(  # what the ledger answers must fit its own contract too
        order_id="ord_1",
        user_id="u1",
        reason=f"{LEDGER_PREFIX}{blocks[0].reason}",
        final=True,
        rejected_at=rejected.rejected_at,
    )
    assert echo.reason.startswith(LEDGER_PREFIX + "risk review rejected: 风控复核未通过")
    assert worker.statuses("ord_2") == ["credited#1"], "the partition goes on reconciling"
    assert worker.positions.next_offset("payments.events", 0) == 3


async def test_an_announcement_the_contract_refuses_is_dead_lettered_with_its_reason_and_the_partition_goes_on() -> (
    None
):
    worker = Worker(Policy(threshold_s=5, compensation_minor=5))
    announcer = worker.rounds.announcer
    queue = announcer.command  # queues a GrantCompensation of -5, which its contract refuses
    announcer.command = lambda state, command: queue(state, replace(command, amount=-5))  # type: ignore[method-assign]
    await worker.batch(worker.record(paid("ord_1", seconds_ago=30)))
    await worker.tick()  # flagged: delayed, RetryCredit #1
    await worker.batch(worker.record(credited("ord_1")), worker.record(paid("ord_2")), worker.record(credited("ord_2")))
    assert len(worker.producer.dead) == 1
    _, headers = worker.producer.dead[0]
    assert headers["dlq_reason"].startswith(b"unbuildable: GrantCompensation for order ord_1")
    assert worker.statuses("ord_1") == ["delayed#1", "credited#2", "compensated#3"]
    assert worker.statuses("ord_2") == ["credited#1"]
    assert worker.observe.dead_letters.labels("unbuildable")._value.get() == 1
    assert "dead letter ord_1" in worker.journal


async def test_an_announcement_the_broker_refused_is_sent_again_and_never_recorded_as_sent() -> None:
    worker = Worker()
    await worker.batch(worker.record(paid("o1", seconds_ago=30)))  # overdue
    worker.producer.refuse_next = 1
    await worker.tick()  # flagged: "delayed" (refused) and RetryCredit #1 (acknowledged)
    assert worker.statuses("o1") == []
    assert worker.stored("o1").phase is Phase.AWAITING_CREDIT  # type: ignore[union-attr]
    for _ in range(3):
        await worker.tick()
    assert worker.statuses("o1") == ["delayed#1"]
    retries = [m.attempt for _, m in worker.producer.sent if isinstance(m, RetryCredit)]
    assert retries[:2] == [1, 1], "sent again whole: the ledger drops the repeat by its event id"
    assert worker.stored("o1").phase is Phase.RETRYING  # type: ignore[union-attr]
    assert worker.observe.rounds_undone._value.get() == 1


async def test_a_retry_carries_the_payment_fact_the_ledger_checks_even_for_an_order_released_from_review() -> None:
    worker = Worker(Policy(threshold_s=5, compensation_minor=5))
    ago = datetime.now(UTC) - timedelta(seconds=60)
    hold = held("o2").model_copy(update={"paid_at": ago, "held_at": ago, "expected_release_at": ago})
    release = OrderReleased(order_id="o2", user_id="u1", reason="reviewed", released_at=ago)
    released_payment = paid("o2", seconds_ago=60).model_copy(update={"amount": hold.amount})
    await worker.batch(
        worker.record(paid("o1", seconds_ago=30)),
        worker.record(hold),
        worker.record(release),
        worker.record(released_payment),
    )
    await worker.tick()  # both overdue: RetryCredit #1 each
    retries = [m for _, m in worker.producer.sent if isinstance(m, RetryCredit)]
    assert sorted((m.order_id, m.user_id, m.amount, m.currency, m.provider_txn_id) for m in retries) == [
        ("o1", "u1", 600, "CNY", "tx-o1"),
        ("o2", "u1", hold.amount, "CNY", "tx-o2"),
    ]


async def test_a_compensation_above_the_orders_amount_is_sent_as_the_orders_amount_which_the_ledger_accepts() -> None:
    worker = Worker(Policy(threshold_s=5, compensation_minor=5000))
    await worker.batch(worker.record(paid("ord_1", seconds_ago=30)))
    await worker.tick()  # flagged: delayed, RetryCredit #1
    await worker.batch(worker.record(credited("ord_1")))  # late: compensated
    granted = [m for _, m in worker.producer.sent if isinstance(m, GrantCompensation)]
    assert [(m.order_id, m.user_id, m.amount, m.currency) for m in granted] == [("ord_1", "u1", 600, "CNY")]
