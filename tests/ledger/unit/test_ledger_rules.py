from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest

from contracts.base import Message
from contracts.codec import Envelope, envelope_for
from contracts.commands import BlockCredit, GrantCompensation, RetryCredit
from contracts.events import CreditPosted, CreditRejected, OrderPlaced, PaymentSucceeded, RefundSucceeded
from ledger import domain
from ledger.domain import AccountKind, Entry, Posting
from ledger.handlers import FaultPolicy, UserPolicy, handle_batch
from servicekit.rejections import PermanentFailure
from tests.ledger.fakes import Books, InMemoryLedger


def paid(order_id: str = "ord_1", amount: int = 600) -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id=order_id,
        user_id="u1",
        amount=amount,
        currency="CNY",
        channel="card",
        provider="sim",
        provider_txn_id="tx",
        paid_at=datetime.now(UTC),
    )


def retry(attempt: int = 1) -> RetryCredit:
    return RetryCredit(
        order_id="ord_1",
        user_id="u1",
        amount=600,
        currency="CNY",
        attempt=attempt,
        requested_at=datetime.now(UTC),
        provider_txn_id="tx",
    )


def block(reason: str = "retries exhausted") -> BlockCredit:
    return BlockCredit(order_id="ord_1", user_id="u1", reason=reason, requested_at=datetime.now(UTC))


def refund(order_id: str = "ord_1") -> RefundSucceeded:
    return RefundSucceeded(
        order_id=order_id, user_id="u1", amount=600, currency="CNY", refund_id="rf_1", refunded_at=datetime.now(UTC)
    )


def compensation(amount: int = 50) -> GrantCompensation:
    return GrantCompensation(
        order_id="ord_1", user_id="u1", amount=amount, currency="CNY", requested_at=datetime.now(UTC)
    )


def delivered(message: Message, event_id: str | None = None) -> tuple[Message, Envelope]:
    return message, envelope_for(message, producer="test", event_id=event_id)


NO_FAULTS = FaultPolicy()
REGISTER_ON_FIRST_CREDIT = UserPolicy()


async def consume(
    books: Books,
    *batch: Message | tuple[Message, Envelope],
    faults: FaultPolicy = NO_FAULTS,
    users: UserPolicy = REGISTER_ON_FIRST_CREDIT,
    parking: Callable[[str], None] = lambda outcome: None,
) -> None:
    """One consumed batch through the ledger's handler; a bare message gets an envelope with a new event id."""
    deliveries: Sequence[tuple[Message, Envelope]] = [d if isinstance(d, tuple) else delivered(d) for d in batch]
    await handle_batch(deliveries, uow=lambda: InMemoryLedger(books), faults=faults, users=users, parking=parking)


def test_a_credit_moves_the_amount_from_platform_clearing_to_the_wallet() -> None:
    posting = domain.credit("ord_1", "u1", 600, "CNY")
    assert sum(e.amount for e in posting.entries) == 0
    by_kind = {e.account.kind: e.amount for e in posting.entries}
    assert by_kind == {AccountKind.WALLET: 600, AccountKind.TOPUP_CLEARING: -600}


def test_an_unbalanced_posting_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="does not balance"):
        Posting("t", "o", "credit", (Entry(domain.wallet("u", "CNY"), 5),))


def test_the_fault_knob_drops_about_its_share_and_always_the_same_orders() -> None:
    dropped = [i for i in range(10_000) if domain.drops_credit(f"ord_{i}", 0.05)]
    assert 400 < len(dropped) < 600
    assert dropped == [i for i in range(10_000) if domain.drops_credit(f"ord_{i}", 0.05)]
    assert not any(domain.drops_credit(f"ord_{i}", 0.0) for i in range(1000))


async def test_the_same_payment_event_twice_credits_once() -> None:
    books = Books()
    event = delivered(paid(), "e1")
    await consume(books, event)
    await consume(books, event)
    assert books.balances["wallet:u1:CNY"] == 600
    assert [type(m) for m in books.published] == [CreditPosted]


async def test_the_same_payment_event_twice_in_one_batch_credits_once() -> None:
    books = Books()
    event = delivered(paid(), "e1")
    await consume(books, event, event)
    assert books.balances["wallet:u1:CNY"] == 600
    assert [type(m) for m in books.published] == [CreditPosted]


async def test_a_second_payment_event_with_another_id_still_credits_once() -> None:
    books = Books()
    await consume(books, delivered(paid(), "e1"), delivered(paid(), "e2"))
    await consume(books, delivered(paid(), "e3"))
    assert books.balances["wallet:u1:CNY"] == 600 and len(books.published) == 1


async def test_a_batch_locks_all_its_orders_once_and_skips_what_is_not_the_ledgers_business() -> None:
    books = Books()
    placed = OrderPlaced(
        order_id="ord_0", user_id="u1", amount=600, currency="CNY", channel="card", placed_at=datetime.now(UTC)
    )
    await consume(books, paid("ord_3"), placed, paid("ord_2"), paid("ord_3"))
    assert books.locked == [["ord_2", "ord_3"]]
    assert set(books.postings) == {("ord_2", "credit"), ("ord_3", "credit")}
    await consume(books, placed)
    assert books.locked == [["ord_2", "ord_3"]]


async def test_a_dropped_credit_is_recorded_as_ground_truth_and_posts_nothing() -> None:
    books = Books()
    await consume(books, paid(), faults=FaultPolicy(drop_credit_share=1.0))
    assert books.faults == {"ord_1"} and books.postings == {} and books.published == []


async def test_a_retry_credits_a_dropped_order_and_a_second_retry_only_reannounces_it() -> None:
    books = Books()
    await consume(books, paid(), faults=FaultPolicy(drop_credit_share=1.0))
    await consume(books, retry(1))
    await consume(books, retry(2))
    assert books.balances["wallet:u1:CNY"] == 600
    assert [type(m) for m in books.published] == [CreditPosted, CreditPosted]
    assert len(books.postings) == 1


async def test_a_payment_and_its_retries_in_one_batch_credit_once_and_reannounce_after() -> None:
    books = Books()
    await consume(books, paid(), retry(1), retry(2))
    assert books.balances["wallet:u1:CNY"] == 600 and len(books.postings) == 1
    assert [type(m) for m in books.published] == [CreditPosted, CreditPosted, CreditPosted]


async def test_a_block_before_any_credit_rejects_finally_and_later_credits_are_refused() -> None:
    books = Books()
    await consume(books, block())
    await consume(books, paid(), retry())
    assert books.postings == {} and "wallet:u1:CNY" not in books.balances
    rejections = [m for m in books.published if isinstance(m, CreditRejected)]
    assert len(rejections) == 3 and all(r.final for r in rejections)


async def test_a_block_after_the_credit_reannounces_the_credit_and_blocks_nothing() -> None:
    books = Books()
    await consume(books, paid(), block())
    assert books.blocks == {}
    assert [type(m) for m in books.published] == [CreditPosted, CreditPosted]


async def test_a_frozen_wallet_is_a_final_rejection_that_blocks_the_order() -> None:
    books = Books(frozen={"wallet:u1:CNY"})
    await consume(books, paid())
    assert isinstance(books.published[0], CreditRejected) and books.published[0].final
    assert books.blocks == {"ord_1": "wallet frozen"}


def strict() -> UserPolicy:
    return UserPolicy(register_on_first_credit=False)


async def test_an_unknown_user_is_refused_retryably_and_credited_once_registered() -> None:
    books = Books()
    await consume(books, paid(), users=strict())
    rejection = books.published[-1]
    assert isinstance(rejection, CreditRejected) and rejection.reason == "unknown user" and not rejection.final
    assert books.blocks == {} and books.postings == {}
    books.users["u1"] = "CNY"
    await consume(books, retry(2), users=strict())
    assert books.balances["wallet:u1:CNY"] == 600 and isinstance(books.published[-1], CreditPosted)


async def test_a_first_credit_registers_the_user_in_its_currency_and_another_currency_is_refused_for_good() -> None:
    books = Books()
    usd = paid("ord_2").model_copy(update={"currency": "USD"})
    await consume(books, paid("ord_1"), usd)
    assert books.users == {"u1": "CNY"}
    rejection = books.published[-1]
    assert isinstance(rejection, CreditRejected) and rejection.final
    assert rejection.reason == "currency mismatch: the wallet is kept in CNY, not USD"
    assert "ord_2" in books.blocks and "wallet:u1:USD" not in books.balances


async def test_a_refunded_order_is_never_credited_and_the_refusal_says_refunded() -> None:
    books = Books()
    await consume(books, block(), refund())
    await consume(books, paid())
    rejection = books.published[-1]
    assert isinstance(rejection, CreditRejected) and rejection.final and rejection.reason == "order refunded"
    assert books.postings == {}


async def test_a_payment_after_its_refund_in_the_same_batch_is_refused_as_refunded() -> None:
    books = Books()
    await consume(books, refund(), paid())
    rejection = books.published[-1]
    assert isinstance(rejection, CreditRejected) and rejection.reason == "order refunded"
    assert books.postings == {} and books.blocks == {"ord_1": "order refunded"}


async def test_a_refund_of_an_order_credited_earlier_in_the_batch_blocks_nothing() -> None:
    books = Books()
    await consume(books, paid(), refund())
    assert books.blocks == {} and [type(m) for m in books.published] == [CreditPosted]


async def test_a_retry_of_a_credited_order_reannounces_what_was_credited_not_what_it_asks() -> None:
    books = Books()
    await consume(books, paid(amount=600))
    await consume(books, retry(1).model_copy(update={"amount": 999}))
    announced = books.published[-1]
    assert isinstance(announced, CreditPosted) and announced.amount == 600
    assert books.balances["wallet:u1:CNY"] == 600 and len(books.postings) == 1


async def test_compensation_is_granted_once_and_only_for_a_credited_order() -> None:
    books = Books()
    await consume(books, compensation())
    assert books.postings == {}
    await consume(books, paid(), compensation(), compensation())
    await consume(books, compensation())
    assert books.balances["wallet:u1:CNY"] == 650
    assert books.balances["platform:compensation:CNY"] == -50


@pytest.mark.parametrize(
    ("command", "label"),
    [
        (compensation().model_copy(update={"user_id": "attacker"}), "compensation_mismatch"),
        (compensation().model_copy(update={"currency": "USD"}), "compensation_mismatch"),
        (compensation(amount=601), "compensation_above_credit"),
        (compensation(amount=1_000_000_000_000), "compensation_above_credit"),
    ],
)
async def test_a_compensation_for_another_wallet_or_above_the_credit_is_refused_for_good_and_pays_nothing(
    command: GrantCompensation, label: str
) -> None:
    books = Books()
    await consume(books, paid(amount=600))
    with pytest.raises(PermanentFailure) as refused:
        await consume(books, command)
    assert refused.value.label == label
    assert list(books.postings) == [("ord_1", "credit")]
    assert books.balances["wallet:u1:CNY"] == 600
    assert "wallet:attacker:CNY" not in books.balances and "wallet:u1:USD" not in books.balances
    await consume(books, compensation(amount=600))  # the order's own, up to what it credited, is still granted
    assert books.balances["wallet:u1:CNY"] == 1200


async def test_a_compensation_to_a_frozen_wallet_is_refused_for_good() -> None:
    books = Books()
    await consume(books, paid(amount=600))
    books.frozen.add("wallet:u1:CNY")
    with pytest.raises(PermanentFailure) as refused:
        await consume(books, compensation())
    assert refused.value.label == "wallet_frozen"
    assert books.balances["wallet:u1:CNY"] == 600 and "platform:compensation:CNY" not in books.balances


async def test_a_dropped_credit_still_records_the_payment_fact_a_retry_is_checked_against() -> None:
    books = Books()
    await consume(books, paid(amount=600), faults=FaultPolicy(drop_credit_share=1.0))
    assert books.facts == {"ord_1": domain.PaymentFact("u1", 600, "CNY", "tx")}


@pytest.mark.parametrize(
    ("before", "command", "label"),
    [
        ([], retry().model_copy(update={"provider_txn_id": None}), "retry_without_payment_fact"),
        ([paid()], retry().model_copy(update={"provider_txn_id": None}), "retry_without_payment_fact"),
        ([paid()], retry().model_copy(update={"amount": 6000}), "payment_fact_mismatch"),
        ([paid()], retry().model_copy(update={"provider_txn_id": "tx-other"}), "payment_fact_mismatch"),
        ([paid()], retry().model_copy(update={"user_id": "u2"}), "payment_fact_mismatch"),
        ([paid()], retry().model_copy(update={"currency": "USD"}), "payment_fact_mismatch"),
    ],
)
async def test_a_retry_naming_no_payment_or_contradicting_the_recorded_one_is_refused_for_good_and_credits_nothing(
    before: list[Message], command: RetryCredit, label: str
) -> None:
    books = Books()
    for message in before:
        await consume(books, message, faults=FaultPolicy(drop_credit_share=1.0))
    with pytest.raises(PermanentFailure) as refused:
        await consume(books, command)
    assert refused.value.label == label
    assert books.postings == {} and books.published == [] and "wallet:u1:CNY" not in books.balances


async def test_a_retry_before_its_payment_is_parked_and_its_payment_then_credits_once_and_clears_it() -> None:
    books, outcomes = Books(), list[str]()
    await consume(books, retry(1), parking=outcomes.append)
    await consume(books, retry(2), parking=outcomes.append)
    assert books.parked == {"ord_1": domain.PaymentFact("u1", 600, "CNY", "tx")}
    assert books.postings == {} and books.published == []
    await consume(books, paid(), parking=outcomes.append)
    assert books.parked == {}
    assert list(books.postings) == [("ord_1", "credit")] and books.balances["wallet:u1:CNY"] == 600
    assert [type(m) for m in books.published] == [CreditPosted]
    assert outcomes == ["parked", "parked", "absorbed"]


async def test_a_parked_retry_contradicting_the_payment_that_follows_is_counted_and_never_credited() -> None:
    books, outcomes = Books(), list[str]()
    await consume(books, retry().model_copy(update={"amount": 6000}), parking=outcomes.append)
    await consume(books, paid(amount=600), parking=outcomes.append)
    assert books.parked == {} and books.balances["wallet:u1:CNY"] == 600
    assert outcomes == ["parked", "contradicted"]


async def test_a_retry_parked_in_the_batch_its_payment_follows_in_is_cleared_by_it() -> None:
    books, outcomes = Books(), list[str]()
    await consume(books, retry(), paid(), parking=outcomes.append)
    assert books.parked == {} and books.balances["wallet:u1:CNY"] == 600
    assert outcomes == ["parked", "absorbed"]


def test_a_block_waits_only_for_an_unpaid_uncredited_unblocked_order_whose_retry_is_parked() -> None:
    claim = domain.PaymentFact("u1", 600, "CNY", "tx")
    posted = domain.Posted("t1", "u1", 600, "CNY", datetime.now(UTC))
    assert domain.block_waits(domain.OrderBooks(), fact=None, parked=claim)
    assert not domain.block_waits(domain.OrderBooks(), fact=None, parked=None)  # rejected in review: never retried
    assert not domain.block_waits(domain.OrderBooks(), fact=claim, parked=claim)  # its payment was there to credit
    assert not domain.block_waits(domain.OrderBooks(credit=posted), fact=None, parked=claim)
    assert not domain.block_waits(domain.OrderBooks(blocked="order refunded"), fact=None, parked=claim)


async def test_a_block_after_parked_retries_waits_and_the_payment_that_follows_credits_once_with_no_rejection() -> None:
    books, outcomes = Books(), list[str]()
    await consume(books, retry(1), retry(2), parking=outcomes.append)
    await consume(books, block(), parking=outcomes.append)
    assert books.blocks == {} and books.published == []
    assert books.pending_blocks == {"ord_1": domain.PendingBlock("u1", "retries exhausted")}
    await consume(books, paid(), parking=outcomes.append)
    assert books.blocks == {} and books.parked == {} and books.pending_blocks == {}
    assert list(books.postings) == [("ord_1", "credit")] and books.balances["wallet:u1:CNY"] == 600
    assert [type(m) for m in books.published] == [CreditPosted]
    assert outcomes == ["parked", "parked", "block_waits", "absorbed"]


async def test_a_block_that_waited_applies_when_the_payment_that_follows_is_not_credited() -> None:
    books = Books(frozen={"wallet:u1:CNY"})
    await consume(books, retry(1), block(), paid())
    assert books.postings == {} and books.pending_blocks == {} and books.parked == {}
    assert books.blocks == {"ord_1": "wallet frozen"}  # the payment's own final refusal; the block keeps it
    rejections = [m for m in books.published if isinstance(m, CreditRejected)]
    assert [r.final for r in rejections] == [True, True]
    assert rejections[-1].reason == "blocked: retries exhausted"  # as a block after the refusal would say


async def test_a_block_that_waited_applies_when_the_payment_is_recorded_but_its_credit_dropped() -> None:
    books = Books()
    await consume(books, retry(1), block())
    await consume(books, paid(), faults=FaultPolicy(drop_credit_share=1.0))
    assert books.postings == {} and books.blocks == {"ord_1": "retries exhausted"}
    assert [(type(m), getattr(m, "final", None)) for m in books.published] == [(CreditRejected, True)]


async def test_a_waiting_block_whose_reason_fills_the_contract_applies_with_a_rejection_the_contract_accepts() -> None:
    books, longest = Books(), "r" * 200  # as long as BlockCredit allows: "blocked: " in front would be 209
    await consume(books, retry(1), block(longest))
    assert books.pending_blocks == {"ord_1": domain.PendingBlock("u1", longest)}
    await consume(books, paid(), faults=FaultPolicy(drop_credit_share=1.0))
    assert books.facts == {"ord_1": domain.PaymentFact("u1", 600, "CNY", "tx")}
    assert books.parked == {} and books.pending_blocks == {} and books.postings == {}
    assert books.blocks == {"ord_1": longest}  # the block keeps its whole reason; only the answer is clipped
    # Its payment, arriving again, is refused for good on the block's reason: clipped the same way.
    await consume(books, paid())
    rejections = [m for m in books.published if isinstance(m, CreditRejected)]
    clipped = "blocked: " + longest[:190] + "\u2026"
    assert [(r.final, r.reason) for r in rejections] == [(True, clipped), (True, clipped)]
    assert books.postings == {}


async def test_a_block_with_no_parked_retry_blocks_at_once_as_for_an_order_rejected_in_review() -> None:
    books = Books()
    await consume(books, block())
    assert books.blocks == {"ord_1": "retries exhausted"} and books.pending_blocks == {}
    assert [(type(m), getattr(m, "final", None)) for m in books.published] == [(CreditRejected, True)]


async def test_every_line_the_ledger_logs_about_an_order_carries_its_order_event_and_correlation_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    books = Books()
    caplog.set_level("DEBUG", logger="ledger.handlers")
    first = delivered(paid(), "pay-1")
    await consume(books, first, faults=FaultPolicy(drop_credit_share=1.0))
    await consume(books, first, delivered(retry(1)), delivered(block()), delivered(compensation()))
    await consume(books, delivered(refund("ord_2")), delivered(paid("ord_2")))
    lines = [r for r in caplog.records if r.name == "ledger.handlers"]
    assert len(lines) >= 5
    for record in lines:
        assert getattr(record, "order_id", None) in {"ord_1", "ord_2"}, record.getMessage()
        assert getattr(record, "event_id", None), record.getMessage()
        assert getattr(record, "correlation_id", None), record.getMessage()
