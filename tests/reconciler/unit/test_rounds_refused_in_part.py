"""Rounds the broker refused in part, done again differently or as they were, against what consumers keep (each
event id once, only a higher sequence): several orders and statuses in one round, undone rounds in a row, a round
done again in part, a state copied again later in its round, dead letters, a partition handed over or a worker
restarted between the undo and the next round (the changelog keeps what may have landed), rounds cancelled or
failing otherwise while they wait, a timer refused round after round, and an order settled below what an undone
round may have left (its status announced again past it)."""

import asyncio
from typing import Any

import pytest

from contracts.events import OrderStatus
from reconciler.adapters import rounds
from reconciler.adapters.table import decode_state
from reconciler.domain import Policy
from tests.reconciler.unit.refused_rounds import POLICY, Broker, flagged_in_an_undone_round
from tests.reconciler.unit.test_support_cases import refund_failed_now, rejected_now
from tests.reconciler.unit.worker import TOPICS, Worker, credited, paid

COMMANDS = (TOPICS["ledger"], TOPICS["payments"])


async def test_two_orders_of_one_undone_round_each_change_differently_and_consumers_follow_both() -> None:
    worker = Worker(POLICY)
    await worker.batch(worker.record(paid("o1", seconds_ago=30)), worker.record(paid("o2", seconds_ago=30)))
    broker = Broker(worker)
    broker.refusing = True
    await worker.tick()  # delayed #1 for both lands, both RetryCredits refused
    broker.refusing = False
    await worker.batch(worker.record(credited("o1")), worker.record(rejected_now("o2")))
    await worker.batch(worker.record(refund_failed_now("o2")))
    broker.check("o1", "o2")


async def test_a_late_credit_and_its_compensation_undone_then_a_block_then_the_credit_again_reach_consumers() -> None:
    worker = Worker(Policy(threshold_s=5, retry_attempts=1, retry_backoff_s=0.01, compensation={"CNY": 5}))
    await worker.batch(worker.record(paid("o1", seconds_ago=30)))
    broker = Broker(worker)
    await worker.tick()  # delayed #1, RetryCredit #1, both taken
    broker.refusing = True
    credit = worker.record(credited("o1"))
    await worker.batch(credit)  # credited #2 and compensated #3 land, GrantCompensation refused: undone
    assert broker.landed_of("o1") == [(1, "delayed"), (2, "credited"), (3, "compensated")]
    broker.refusing = False
    await asyncio.sleep(0.05)
    await worker.tick()  # retries exhausted: BlockCredit and remediating, which must not be #2 or #3
    await worker.batch(credit)  # read again past the hole: credited and compensated after the block
    broker.check("o1")
    assert worker.stored("o1").status.value == "compensated"  # type: ignore[union-attr]


async def test_a_renumbered_round_undone_in_turn_and_then_done_again_reaches_consumers() -> None:
    worker = Worker(POLICY)
    await worker.batch(worker.record(paid("o1", seconds_ago=30)), worker.record(paid("o2")))
    broker = Broker(worker, refused=COMMANDS)
    broker.refusing = True
    await worker.tick()  # o1: delayed #1 lands, RetryCredit refused
    records = worker.record(credited("o1")), worker.record(rejected_now("o2"))
    await worker.batch(*records)  # o1: credited renumbered #2 lands; o2: remediating #1 lands, IssueRefund refused
    broker.refusing = False
    await worker.batch(*records)
    await worker.batch(worker.record(refund_failed_now("o2")))
    broker.check("o1", "o2")


async def test_a_renumbered_round_undone_then_its_timer_repeated_then_its_credit_reaches_consumers() -> None:
    worker = Worker(POLICY)
    await worker.batch(worker.record(paid("o1", seconds_ago=30)), worker.record(paid("o2")))
    broker = Broker(worker, refused=COMMANDS)
    broker.refusing = True
    await worker.tick()
    records = worker.record(credited("o1")), worker.record(rejected_now("o2"))
    await worker.batch(*records)  # undone again: o1 may have delayed #1 and credited #2 on the broker
    broker.refusing = False
    await worker.tick()  # the timer fires again: delayed #1 repeated, only part of what may have landed
    await worker.batch(*records)
    broker.check("o1", "o2")


async def test_a_round_raising_before_its_records_are_built_renumbers_nothing_after_a_successful_round() -> None:
    worker = Worker(POLICY)
    await worker.batch(worker.record(paid("o1", seconds_ago=30)))
    broker = Broker(worker)
    await worker.tick()  # delayed #1 sent and written
    # (Not the record's handling failing: that dead-letters the record, and the round goes on.)
    states = worker.states
    staged = states.staged
    states.staged = lambda: (_ for _ in ()).throw(RuntimeError("boom"))  # type: ignore[method-assign]
    credit = worker.record(credited("o1"))
    with pytest.raises(RuntimeError):
        await worker.batch(credit)
    states.staged = staged  # type: ignore[method-assign]
    await worker.batch(credit)
    assert broker.landed_of("o1") == [(1, "delayed"), (2, "credited")]
    broker.check("o1")


async def test_a_renumbered_state_is_written_to_the_changelog_with_the_sequence_it_was_announced_under() -> None:
    worker, broker = await flagged_in_an_undone_round()  # delayed #1 landed, RetryCredit #1 refused: undone
    await worker.batch(worker.record(rejected_now("o1")))
    key, value, _ = worker.changelog.records[-1]
    assert key == "o1" and value is not None
    assert decode_state(value).sequence == 2 == worker.stored("o1").sequence  # type: ignore[union-attr]
    await worker.batch(worker.record(refund_failed_now("o1")))
    broker.check("o1")


async def test_an_unbuildable_status_in_an_undone_round_leaves_the_order_reaching_consumers() -> None:
    worker = Worker(POLICY)
    await worker.batch(worker.record(paid("o1", seconds_ago=30)))
    broker = Broker(worker)
    announcer = worker.rounds.announcer
    status = announcer._status

    def refusing_delayed(state, change, now):  # type: ignore[no-untyped-def]
        if change.status.value == "delayed":
            raise ValueError("unbuildable")
        return status(state, change, now)

    announcer._status = refusing_delayed  # type: ignore[method-assign]
    broker.refusing = True
    await worker.tick()  # delayed dead-lettered, RetryCredit refused: undone
    broker.refusing = False
    await worker.batch(worker.record(credited("o1")))
    assert broker.kept("o1") == ["credited"]
    assert worker.stored("o1").sequence == broker.landed_of("o1")[-1][0]  # type: ignore[union-attr]


async def test_a_renumbered_status_followed_by_a_silent_change_in_its_round_keeps_its_sequence_in_the_table() -> None:
    worker, broker = await flagged_in_an_undone_round()  # delayed #1 landed, RetryCredit #1 refused: undone
    final = rejected_now("o1")
    # The ledger's final refusal read twice (a producer's retry): the second one only notes itself.
    await worker.batch(worker.record(final), worker.record(final.model_copy()))
    stored = worker.stored("o1")
    assert stored is not None and stored.status.value == "remediating"
    announced = [sequence for _, sequence, status in broker.landed if status == "remediating"]
    assert stored.sequence == announced[-1], f"stored #{stored.sequence}, landed: {broker.landed}"


async def test_a_refund_failing_after_a_renumbered_remediating_with_a_repeated_rejection_reaches_consumers() -> None:
    worker, broker = await flagged_in_an_undone_round()  # delayed #1 landed, RetryCredit #1 refused: undone
    final = rejected_now("o1")
    await worker.batch(worker.record(final), worker.record(final.model_copy()))
    await worker.batch(worker.record(refund_failed_now("o1")))
    stored = worker.stored("o1")
    assert stored is not None and stored.status.value == "needs_support"
    assert broker.kept("o1")[-1] == "needs_support", f"landed: {broker.landed}"


async def test_an_order_taken_over_after_an_undone_round_has_its_credit_numbered_past_what_may_have_landed() -> None:
    _, broker = await flagged_in_an_undone_round()  # delayed #1 landed, RetryCredit #1 refused: undone
    again, seen = broker.taken_over()  # a new owner, its table restored from the changelog
    await again.batch(again.record(credited("o1")))  # the credit read before the timer fires again
    assert seen.kept("o1") == ["delayed", "credited"], f"landed: {seen.landed}"
    seen.check("o1")
    assert again.stored("o1").landed == ()  # type: ignore[union-attr]  # forgotten once numbered past


async def test_an_order_taken_over_after_an_undone_round_repeats_what_it_announced_under_the_same_ids() -> None:
    _, broker = await flagged_in_an_undone_round()
    again, seen = broker.taken_over()
    await again.tick()  # the timer fires again: delayed #1 and RetryCredit #1, as the undone round sent them
    assert [sequence for _, sequence, _ in seen.landed] == [1, 1] and len({i for i, _, _ in seen.landed}) == 1
    await again.batch(again.record(credited("o1")))
    seen.check("o1")


async def test_a_refused_changelog_record_of_what_an_undone_round_may_have_left_stops_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def stop(what: str) -> None:
        raise SystemExit(what)

    monkeypatch.setattr(rounds, "stop", stop)
    worker = Worker(Policy(threshold_s=5, compensation={"CNY": 5}))
    await worker.batch(worker.record(paid("o1", seconds_ago=30)))
    broker = Broker(worker)
    await worker.tick()  # delayed #1, RetryCredit #1, both taken
    broker.refusing = worker.changelog.refuse = True
    with pytest.raises(SystemExit, match="changelog"):
        # credited #2 and compensated #3 landed, GrantCompensation refused, and what may have landed not written
        await worker.batch(worker.record(credited("o1")))


async def test_a_timer_round_whose_statuses_the_changelog_cannot_remember_first_announces_nothing() -> None:
    worker = Worker(POLICY)
    await worker.batch(worker.record(paid("o1", seconds_ago=30)))
    broker = Broker(worker)
    worker.changelog.refuse = True
    await worker.tick()  # the flag's statuses are not remembered on the changelog: nothing of it is sent
    assert broker.landed_of("o1") == [] and worker.stored("o1").landed == ()  # type: ignore[union-attr]
    worker.changelog.refuse = False
    await worker.tick()  # the flag again, remembered first this time
    assert broker.landed_of("o1") == [(1, "delayed")]
    assert decode_state(worker.changelog.records[-2][1]).landed == ((1, OrderStatus.DELAYED),)  # type: ignore[arg-type]


async def test_a_late_credit_undone_then_a_block_undone_then_the_credit_again_leaves_consumers_at_compensated() -> None:
    worker = Worker(Policy(threshold_s=5, retry_attempts=1, retry_backoff_s=0.01, compensation={"CNY": 5}))
    await worker.batch(worker.record(paid("o1", seconds_ago=30)))
    broker = Broker(worker)
    await worker.tick()  # delayed #1, RetryCredit #1, both taken
    broker.refusing = True
    credit = worker.record(credited("o1"))
    await worker.batch(credit)  # credited #2 and compensated #3 land, GrantCompensation refused: undone
    await asyncio.sleep(0.05)
    await worker.tick()  # retries exhausted: remediating (renumbered #4) lands, BlockCredit refused: undone
    assert broker.landed_of("o1") == [(1, "delayed"), (2, "credited"), (3, "compensated"), (4, "remediating")]
    broker.refusing = False
    await worker.batch(credit)  # read again: credited #2 and compensated #3, as they landed
    assert worker.stored("o1").status.value == "compensated"  # type: ignore[union-attr]
    broker.check("o1")


class Stalled:
    """The producer, the ledger's command acknowledgement never coming (the round waits on it)."""

    def __init__(self, worker: Worker) -> None:
        self.send = worker.producer.send
        worker.producer.send = self  # type: ignore[method-assign,assignment]
        self.stall = False

    async def __call__(self, topic: str, *args: Any) -> Any:
        if self.stall and topic == TOPICS["ledger"]:
            return asyncio.get_running_loop().create_future()
        return await self.send(topic, *args)


async def test_a_round_cancelled_while_it_waits_for_the_broker_leaves_its_next_owner_numbering_past_it() -> None:
    worker = Worker(POLICY)
    await worker.batch(worker.record(paid("o1", seconds_ago=30)))
    broker = Broker(worker)
    stalled = Stalled(worker)
    stalled.stall = True
    tick = asyncio.create_task(worker.tick())  # delayed #1 taken, RetryCredit #1 never acknowledged
    await asyncio.sleep(0.05)
    tick.cancel()  # the worker stops (a deploy) while the round waits
    with pytest.raises(asyncio.CancelledError):
        await tick
    assert broker.landed_of("o1") == [(1, "delayed")]
    again, seen = broker.taken_over()
    await again.batch(again.record(credited("o1")))  # the credit read before the timer fires again
    seen.check("o1")


async def test_a_round_failing_otherwise_while_it_waits_leaves_its_next_owner_numbering_past_it() -> None:
    worker = Worker(POLICY)
    await worker.batch(worker.record(paid("o1", seconds_ago=30)))
    broker = Broker(worker)
    send = broker.send

    async def failing(topic: str, *args: Any) -> Any:
        if topic == TOPICS["ledger"]:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(RuntimeError("not a refusal"))
            return future
        return await send(topic, *args)

    broker.send = failing  # type: ignore[assignment]
    with pytest.raises(RuntimeError):
        await worker.tick()  # delayed #1 taken, RetryCredit #1 failed otherwise: undone (the ticker goes on)
    again, seen = broker.taken_over()  # or the partition handed over
    await again.batch(again.record(credited("o1")))
    seen.check("o1")


async def test_an_order_flagged_in_many_undone_rounds_keeps_its_timeline_and_changelog_quiet() -> None:
    worker = Worker(POLICY)
    await worker.batch(worker.record(paid("o1", seconds_ago=30)))
    broker = Broker(worker)
    broker.refusing = True  # ledger.commands refuses every record (an ACL, a partition offline)
    written = len(worker.changelog.records)
    for _ in range(61):
        await worker.tick()  # delayed #1 again and again, RetryCredit #1 refused: undone every tick
    stored = worker.stored("o1")
    assert stored is not None
    assert [what for what, _ in stored.history][:1] == ["paid"], f"timeline: {[w for w, _ in stored.history][:3]}"
    assert len(worker.changelog.records) - written <= 1, f"{len(worker.changelog.records) - written} records"
