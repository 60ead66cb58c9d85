"""A person's re-drive (RedriveCredit, on ledger.redrives): it lifts the ledger's block unless the order was refunded
or its block is one a refund follows. A RetryCredit naming requested_by (a re-drive as it was sent on ledger.commands,
which the reconciler writes too) is refused for good."""

from datetime import UTC, datetime

import pytest

from contracts.commands import RedriveCredit
from contracts.events import CreditPosted, CreditRejected
from ledger import domain
from ledger.handlers import FaultPolicy
from servicekit.rejections import PermanentFailure
from tests.ledger.fakes import Books
from tests.ledger.unit.test_ledger_rules import block, consume, delivered, paid, refund, retry, strict

SUPPORT_KEY = "support-alice"


def redrive(**update: object) -> RedriveCredit:
    fields: dict[str, object] = {
        "order_id": "ord_1",
        "user_id": "u1",
        "amount": 600,
        "currency": "CNY",
        "attempt": 1,
        "requested_at": datetime.now(UTC),
        "provider_txn_id": "tx",
        "requested_by": SUPPORT_KEY,
    }
    return RedriveCredit.model_validate({**fields, **update})


async def blocked_unknown_user(books: Books) -> None:
    """The order of issue 18: the user was unknown, the retries ran out, the ledger blocked the order."""
    await consume(books, paid(), block(), users=strict())
    assert books.blocks == {"ord_1": "retries exhausted"}
    books.published.clear()


def test_a_redrive_lifts_a_block_but_never_a_refunded_ones_nor_an_order_not_blocked() -> None:
    assert domain.lifts_block(domain.OrderBooks(blocked="retries exhausted"))
    assert not domain.lifts_block(domain.OrderBooks(blocked=domain.ORDER_REFUNDED))
    assert not domain.lifts_block(domain.OrderBooks())


async def test_a_retry_naming_who_asked_is_refused_for_good_as_off_its_topic_and_lifts_nothing() -> None:
    books = Books()
    await blocked_unknown_user(books)
    books.users["u1"] = "CNY"
    with pytest.raises(PermanentFailure, match=r"ledger\.redrives") as refused:
        await consume(books, retry(1).model_copy(update={"requested_by": SUPPORT_KEY}), users=strict())
    assert refused.value.label == "wrong_topic"
    assert books.blocks == {"ord_1": "retries exhausted"} and books.postings == {} and books.published == []


async def test_a_redrive_of_an_order_with_no_recorded_payment_is_refused_for_good_not_parked() -> None:
    books = Books(users={"u1": "CNY"})
    with pytest.raises(PermanentFailure) as refused:
        await consume(books, redrive(), users=strict())
    assert refused.value.label == domain.NO_PAYMENT_FACT
    assert books.postings == {} and books.published == [] and books.parked == {}


async def test_a_redrive_of_a_blocked_order_lifts_the_block_and_credits_it_once() -> None:
    books = Books()
    await blocked_unknown_user(books)
    books.users["u1"] = "CNY"
    await consume(books, redrive(), users=strict())
    assert books.blocks == {} and books.balances["wallet:u1:CNY"] == paid().amount
    await consume(books, redrive(), users=strict())
    assert len(books.postings) == 1
    assert [type(m) for m in books.published] == [CreditPosted, CreditPosted]  # the second only re-announces


async def test_a_retry_without_requested_by_on_a_blocked_order_is_still_refused_for_good() -> None:
    books = Books()
    await blocked_unknown_user(books)
    books.users["u1"] = "CNY"
    await consume(books, retry(2), users=strict())
    rejection = books.published[-1]
    assert isinstance(rejection, CreditRejected) and rejection.final
    assert rejection.reason == "blocked: retries exhausted"
    assert books.blocks == {"ord_1": "retries exhausted"} and books.postings == {}


async def test_a_redrive_of_a_refunded_order_is_refused_for_good_naming_the_refund() -> None:
    books = Books()
    await consume(books, paid(), block(), refund(), users=strict())
    books.users["u1"] = "CNY"
    await consume(books, redrive(), users=strict())
    rejection = books.published[-1]
    assert isinstance(rejection, CreditRejected) and rejection.final and rejection.reason == domain.ORDER_REFUNDED
    assert books.blocks == {"ord_1": domain.ORDER_REFUNDED} and books.postings == {}


@pytest.mark.parametrize("reason", ["risk review rejected: stolen card", "support refund by agent-7: wrote in"])
async def test_a_redrive_never_lifts_a_block_a_refund_follows_whose_refund_the_ledger_cannot_see(reason: str) -> None:
    books = Books()
    await consume(books, paid(), block(reason), users=strict())
    books.users["u1"] = "CNY"
    books.published.clear()
    await consume(books, redrive(), users=strict())
    rejection = books.published[-1]
    assert isinstance(rejection, CreditRejected) and rejection.final and rejection.reason == f"blocked: {reason}"
    assert books.blocks == {"ord_1": reason} and books.postings == {}


def test_a_block_keeps_its_first_reason_unless_a_refund_follows_the_new_one_and_not_the_first() -> None:
    review, support = "risk review rejected: stolen card", "support refund by agent-7: wrote in"
    assert domain.standing_block(None, "retries exhausted") == "retries exhausted"
    assert domain.standing_block("wallet frozen", "retries exhausted") == "wallet frozen"
    assert domain.standing_block("wallet frozen", support) == support
    assert domain.standing_block("retries exhausted", review) == review
    assert domain.standing_block(support, "retries exhausted") == support
    assert domain.standing_block(review, support) == review
    assert domain.standing_block(domain.ORDER_REFUNDED, support) == domain.ORDER_REFUNDED


@pytest.mark.parametrize("reason", ["risk review rejected: stolen card", "support refund by agent-7: wrote in"])
async def test_a_refund_block_on_an_order_blocked_for_a_liftable_reason_takes_its_place_so_no_redrive_credits_it(
    reason: str,
) -> None:
    # The ledger refused the payment for good (a frozen wallet): the order is blocked for a reason a re-drive lifts.
    books = Books(users={"u1": "CNY"}, frozen={"wallet:u1:CNY"})
    await consume(books, paid(), users=strict())
    assert books.blocks == {"ord_1": "wallet frozen"}
    # A person's refund (or a review's rejection) reaches it: answered with a final rejection, so the refund goes.
    books.published.clear()
    await consume(books, block(reason), users=strict())
    assert [(type(m), m.final) for m in books.published if isinstance(m, CreditRejected)] == [(CreditRejected, True)]
    assert books.blocks == {"ord_1": reason}
    # A re-drive consumed after it (sent before the refund was asked, on the other topic) never credits the order.
    books.frozen.clear()
    books.published.clear()
    await consume(books, redrive(), users=strict())
    rejection = books.published[-1]
    assert isinstance(rejection, CreditRejected) and rejection.final and rejection.reason == f"blocked: {reason}"
    assert books.postings == {} and books.blocks == {"ord_1": reason}


async def test_the_reconcilers_block_after_a_refund_block_keeps_the_refunds_reason() -> None:
    books = Books()
    await consume(books, paid(), block("support refund by agent-7: wrote in"), block(), users=strict())
    assert books.blocks == {"ord_1": "support refund by agent-7: wrote in"}
    books.users["u1"] = "CNY"
    await consume(books, redrive(), users=strict())
    assert books.postings == {}


async def test_a_refund_block_waiting_with_a_parked_retry_is_not_replaced_by_a_later_liftable_one() -> None:
    books = Books()
    await consume(books, retry(1), block("risk review rejected: stolen card"), block())
    assert books.pending_blocks == {"ord_1": domain.PendingBlock("u1", "risk review rejected: stolen card")}
    await consume(books, paid(), faults=FaultPolicy(drop_credit_share=1.0))
    assert books.blocks == {"ord_1": "risk review rejected: stolen card"} and books.postings == {}


async def test_a_redrive_for_a_user_still_unknown_is_refused_as_before_and_the_block_is_restored() -> None:
    books = Books()
    await blocked_unknown_user(books)
    await consume(books, redrive(), retry(2), users=strict())
    rejection, after = books.published
    assert isinstance(rejection, CreditRejected) and not rejection.final and rejection.reason == "unknown user"
    # Restored in the batch too: the reconciler's retry that follows the re-drive still meets the block.
    assert isinstance(after, CreditRejected) and after.final and after.reason == "blocked: retries exhausted"
    assert books.blocks == {"ord_1": "retries exhausted"} and books.postings == {}


async def test_a_redrive_refused_for_an_order_not_blocked_answers_under_its_own_event_id_not_the_retrys() -> None:
    books = Books()
    await consume(books, paid(), retry(1), users=strict())  # the user unknown: the payment's and retry 1's refused
    await consume(books, redrive(), users=strict())  # the person's attempt 1, the user still unknown
    assert [type(m) for m in books.published] == [CreditRejected] * 3
    assert len(set(books.event_ids)) == 3, "a reader would drop the re-drive's answer as retry 1's repeat"


async def test_a_redrive_for_a_frozen_wallet_is_refused_for_good_and_the_order_stays_blocked() -> None:
    books = Books(frozen={"wallet:u1:CNY"})
    await blocked_unknown_user(books)
    books.users["u1"] = "CNY"
    await consume(books, redrive(), users=strict())
    rejection = books.published[-1]
    assert isinstance(rejection, CreditRejected) and rejection.final and rejection.reason == "wallet frozen"
    assert books.blocks == {"ord_1": "wallet frozen"} and books.postings == {}


async def test_a_redrive_that_does_not_match_the_payment_is_refused_and_lifts_nothing() -> None:
    books = Books()
    await blocked_unknown_user(books)
    books.users["u1"] = "CNY"
    with pytest.raises(PermanentFailure, match="amount"):
        await consume(books, redrive(amount=paid().amount + 1), users=strict())
    assert books.blocks == {"ord_1": "retries exhausted"} and books.postings == {}


async def test_a_block_and_its_redrive_in_one_batch_credit_the_order_and_leave_no_block() -> None:
    books = Books(users={"u1": "CNY"}, frozen={"wallet:u1:CNY"})
    await consume(books, paid(), users=strict())  # frozen: refused for good, blocked
    books.frozen.clear()
    books.published.clear()
    await consume(books, block(), redrive(), users=strict())
    assert books.blocks == {} and len(books.postings) == 1
    assert [type(m) for m in books.published] == [CreditRejected, CreditPosted]


async def test_the_redrive_log_line_names_who_asked(caplog: pytest.LogCaptureFixture) -> None:
    books = Books()
    await blocked_unknown_user(books)
    books.users["u1"] = "CNY"
    caplog.set_level("INFO", logger="ledger.handlers")
    await consume(books, delivered(redrive()), users=strict())
    lines = [r for r in caplog.records if r.name == "ledger.handlers" and SUPPORT_KEY in r.getMessage()]
    assert len(lines) == 1 and "credited" in lines[0].getMessage()
    assert getattr(lines[0], "order_id", None) == "ord_1"
