"""A round the broker refused in part (a command on another partition's leader refused, its status change taken) is
undone and done again; if a record is read before its timer fires again, the order changes differently. Its status
must not reuse a sequence the undone round announced for another status: every consumer drops an event id it has
applied (a status change's id names its order and sequence), and payments keeps an order's status only for a higher
sequence, so that second status would be lost for good. A round done again as it was repeats its sequences (readers
drop the repeat by its id)."""

from tests.reconciler.unit.refused_rounds import flagged_in_an_undone_round
from tests.reconciler.unit.test_support_cases import rejected_now as rejected
from tests.reconciler.unit.worker import credited


async def test_a_round_refused_in_part_then_a_credit_leaves_consumers_with_the_credit() -> None:
    worker, broker = await flagged_in_an_undone_round()  # delayed #1 landed, RetryCredit #1 refused: undone
    assert worker.statuses("o1") == ["delayed#1"]
    await worker.batch(worker.record(credited("o1")))  # the credit is read before the next tick
    stored = worker.stored("o1")
    assert stored is not None and stored.status.value == "credited"
    assert broker.kept("o1")[-1] == "credited", f"landed (event id, sequence, status): {broker.landed}"


async def test_a_refund_started_after_a_redone_flag_is_seen_as_remediating_by_consumers() -> None:
    worker, broker = await flagged_in_an_undone_round()  # delayed #1 landed, RetryCredit #1 refused: undone
    await worker.batch(worker.record(rejected("o1")))  # the ledger's final refusal, before the next tick: IssueRefund
    stored = worker.stored("o1")
    assert stored is not None and stored.status.value == "remediating"
    # payments refuses a support re-drive of an order it sees `remediating`; it must see it so while refunding.
    assert broker.kept("o1")[-1] == "remediating", f"landed (event id, sequence, status): {broker.landed}"


async def test_a_round_refused_in_part_and_done_again_as_it_was_repeats_its_status_under_the_same_id() -> None:
    worker, broker = await flagged_in_an_undone_round()  # delayed #1 landed, RetryCredit #1 refused: undone
    await worker.tick()  # the timer fires again: the same round
    await worker.batch(worker.record(credited("o1")))
    landed = [(sequence, status) for _, sequence, status in broker.landed]
    assert landed == [(1, "delayed"), (1, "delayed"), (2, "credited")]
    assert broker.landed[0][0] == broker.landed[1][0], "the repeat carries the same event id: readers drop it"
    assert broker.kept("o1")[:2] == ["delayed", "credited"]
