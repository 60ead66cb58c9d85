from datetime import UTC, datetime

import pytest

from contracts.codec import envelope_for
from contracts.commands import BlockCredit, GrantCompensation, RetryCredit
from contracts.events import CreditPosted, CreditRejected, PaymentSucceeded, RefundSucceeded
from ledger import domain
from ledger.domain import AccountKind, Entry, Posting
from ledger.handlers import (
    FaultPolicy,
    UserPolicy,
    handle_block_credit,
    handle_grant_compensation,
    handle_payment_succeeded,
    handle_refund_succeeded,
    handle_retry_credit,
)
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
    event = paid()
    envelope = envelope_for(event, producer="payments", event_id="e1")
    for _ in range(2):
        await handle_payment_succeeded(event, envelope, uow=lambda: InMemoryLedger(books), faults=FaultPolicy())
    assert books.balances["wallet:u1:CNY"] == 600
    assert [type(m) for m in books.published] == [CreditPosted]


async def test_a_second_payment_event_with_another_id_still_credits_once() -> None:
    books = Books()
    for event_id in ("e1", "e2"):
        envelope = envelope_for(paid(), producer="payments", event_id=event_id)
        await handle_payment_succeeded(paid(), envelope, uow=lambda: InMemoryLedger(books), faults=FaultPolicy())
    assert books.balances["wallet:u1:CNY"] == 600 and len(books.published) == 1


async def test_a_dropped_credit_is_recorded_as_ground_truth_and_posts_nothing() -> None:
    books = Books()
    event = paid()
    await handle_payment_succeeded(
        event,
        envelope_for(event, producer="payments"),
        uow=lambda: InMemoryLedger(books),
        faults=FaultPolicy(drop_credit_share=1.0),
    )
    assert books.faults == {"ord_1"} and books.postings == {} and books.published == []


def retry(attempt: int = 1) -> RetryCredit:
    return RetryCredit(
        order_id="ord_1", user_id="u1", amount=600, currency="CNY", attempt=attempt, requested_at=datetime.now(UTC)
    )


def block() -> BlockCredit:
    return BlockCredit(order_id="ord_1", user_id="u1", reason="retries exhausted", requested_at=datetime.now(UTC))


async def test_a_retry_credits_a_dropped_order_and_a_second_retry_only_reannounces_it() -> None:
    books = Books()
    for attempt in (1, 2):
        await handle_retry_credit(
            retry(attempt), envelope_for(retry(attempt), producer="r"), uow=lambda: InMemoryLedger(books)
        )
    assert books.balances["wallet:u1:CNY"] == 600
    assert [type(m) for m in books.published] == [CreditPosted, CreditPosted]
    assert len(books.postings) == 1


async def test_a_block_before_any_credit_rejects_finally_and_later_credits_are_refused() -> None:
    books = Books()
    await handle_block_credit(block(), envelope_for(block(), producer="r"), uow=lambda: InMemoryLedger(books))
    await handle_retry_credit(retry(), envelope_for(retry(), producer="r"), uow=lambda: InMemoryLedger(books))
    event = paid()
    await handle_payment_succeeded(
        event, envelope_for(event, producer="p"), uow=lambda: InMemoryLedger(books), faults=FaultPolicy()
    )
    assert books.postings == {} and "wallet:u1:CNY" not in books.balances
    rejections = [m for m in books.published if isinstance(m, CreditRejected)]
    assert len(rejections) == 3 and all(r.final for r in rejections)


async def test_a_block_after_the_credit_reannounces_the_credit_and_blocks_nothing() -> None:
    books = Books()
    event = paid()
    await handle_payment_succeeded(
        event, envelope_for(event, producer="p"), uow=lambda: InMemoryLedger(books), faults=FaultPolicy()
    )
    await handle_block_credit(block(), envelope_for(block(), producer="r"), uow=lambda: InMemoryLedger(books))
    assert books.blocks == {}
    assert [type(m) for m in books.published] == [CreditPosted, CreditPosted]


async def test_a_frozen_wallet_is_a_final_rejection_that_blocks_the_order() -> None:
    books = Books(frozen={"wallet:u1:CNY"})
    event = paid()
    await handle_payment_succeeded(
        event, envelope_for(event, producer="p"), uow=lambda: InMemoryLedger(books), faults=FaultPolicy()
    )
    assert isinstance(books.published[0], CreditRejected) and books.published[0].final
    assert books.blocks == {"ord_1": "wallet frozen"}


def strict() -> UserPolicy:
    return UserPolicy(register_on_first_credit=False)


async def test_an_unknown_user_is_refused_retryably_and_credited_once_registered() -> None:
    books = Books()
    uow = lambda: InMemoryLedger(books)  # noqa: E731
    await handle_retry_credit(retry(1), envelope_for(retry(1), producer="r"), uow=uow, users=strict())
    rejection = books.published[-1]
    assert isinstance(rejection, CreditRejected) and rejection.reason == "unknown user" and not rejection.final
    assert books.blocks == {} and books.postings == {}
    books.users["u1"] = "CNY"
    await handle_retry_credit(retry(2), envelope_for(retry(2), producer="r"), uow=uow, users=strict())
    assert books.balances["wallet:u1:CNY"] == 600 and isinstance(books.published[-1], CreditPosted)


async def test_a_first_credit_registers_the_user_in_its_currency_and_another_currency_is_refused_for_good() -> None:
    books = Books()
    uow = lambda: InMemoryLedger(books)  # noqa: E731
    event = paid("ord_1")
    await handle_payment_succeeded(event, envelope_for(event, producer="p"), uow=uow, faults=FaultPolicy())
    assert books.users == {"u1": "CNY"}
    usd = event.model_copy(update={"order_id": "ord_2", "currency": "USD"})
    await handle_payment_succeeded(usd, envelope_for(usd, producer="p"), uow=uow, faults=FaultPolicy())
    rejection = books.published[-1]
    assert isinstance(rejection, CreditRejected) and rejection.final
    assert rejection.reason == "currency mismatch: the wallet is kept in CNY, not USD"
    assert "ord_2" in books.blocks and "wallet:u1:USD" not in books.balances


async def test_a_refunded_order_is_never_credited_and_the_refusal_says_refunded() -> None:
    books = Books()
    uow = lambda: InMemoryLedger(books)  # noqa: E731
    await handle_block_credit(block(), envelope_for(block(), producer="r"), uow=uow)
    refund = RefundSucceeded(
        order_id="ord_1", user_id="u1", amount=600, currency="CNY", refund_id="rf_1", refunded_at=datetime.now(UTC)
    )
    await handle_refund_succeeded(refund, envelope_for(refund, producer="payments"), uow=uow)
    event = paid()
    await handle_payment_succeeded(event, envelope_for(event, producer="p"), uow=uow, faults=FaultPolicy())
    rejection = books.published[-1]
    assert isinstance(rejection, CreditRejected) and rejection.final and rejection.reason == "order refunded"
    assert books.postings == {}


async def test_a_retry_of_a_credited_order_reannounces_what_was_credited_not_what_it_asks() -> None:
    books = Books()
    uow = lambda: InMemoryLedger(books)  # noqa: E731
    event = paid(amount=600)
    await handle_payment_succeeded(event, envelope_for(event, producer="p"), uow=uow, faults=FaultPolicy())
    odd = retry(1).model_copy(update={"amount": 999})
    await handle_retry_credit(odd, envelope_for(odd, producer="r"), uow=uow)
    announced = books.published[-1]
    assert isinstance(announced, CreditPosted) and announced.amount == 600
    assert books.balances["wallet:u1:CNY"] == 600 and len(books.postings) == 1


def compensation(amount: int = 50) -> GrantCompensation:
    return GrantCompensation(
        order_id="ord_1", user_id="u1", amount=amount, currency="CNY", requested_at=datetime.now(UTC)
    )


async def test_compensation_is_granted_once_and_only_for_a_credited_order() -> None:
    books = Books()
    uow = lambda: InMemoryLedger(books)  # noqa: E731
    await handle_grant_compensation(compensation(), envelope_for(compensation(), producer="r"), uow=uow)
    assert books.postings == {}
    event = paid()
    await handle_payment_succeeded(event, envelope_for(event, producer="p"), uow=uow, faults=FaultPolicy())
    for _ in range(2):
        await handle_grant_compensation(compensation(), envelope_for(compensation(), producer="r"), uow=uow)
    assert books.balances["wallet:u1:CNY"] == 650
    assert books.balances["platform:compensation:CNY"] == -50
