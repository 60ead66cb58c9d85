from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

import pytest

from contracts.base import Message
from contracts.codec import envelope_for
from contracts.commands import BlockCredit, RetryCredit
from contracts.events import CreditPosted, CreditRejected, PaymentSucceeded
from contracts.topics import Topic
from ledger import domain
from ledger.domain import AccountKind, Entry, Posted, Posting
from ledger.handlers import FaultPolicy, handle_block_credit, handle_payment_succeeded, handle_retry_credit


@dataclass
class Books:
    postings: dict[tuple[str, str], Posting] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    processed: set[tuple[str, str]] = field(default_factory=set)
    faults: set[str] = field(default_factory=set)
    published: list[Message] = field(default_factory=list)
    blocks: dict[str, str] = field(default_factory=dict)
    frozen: set[str] = field(default_factory=set)


class InMemoryLedger:
    def __init__(self, books: Books) -> None:
        self.books = books

    async def __aenter__(self) -> "InMemoryLedger":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def mark_processed(self, consumer: str, event_id: str) -> bool:
        if (consumer, event_id) in self.books.processed:
            return False
        self.books.processed.add((consumer, event_id))
        return True

    async def post(self, posting: Posting) -> bool:
        key = (posting.order_id, posting.kind)
        if key in self.books.postings:
            return False
        self.books.postings[key] = posting
        for e in posting.entries:
            self.books.balances[e.account.account_id] = self.books.balances.get(e.account.account_id, 0) + e.amount
        return True

    async def record_fault(self, order_id: str, kind: str) -> None:
        self.books.faults.add(order_id)

    async def lock_order(self, order_id: str) -> None:
        return None

    async def credit_of(self, order_id: str) -> Posted | None:
        posting = self.books.postings.get((order_id, "credit"))
        if posting is None:
            return None
        wallet = next(e for e in posting.entries if e.account.kind is AccountKind.WALLET)
        return Posted(
            posting.transaction_id,
            wallet.account.user_id or "",
            wallet.amount,
            wallet.account.currency,
            datetime.now(UTC),
        )

    async def block_of(self, order_id: str) -> str | None:
        return self.books.blocks.get(order_id)

    async def block(self, order_id: str, reason: str) -> None:
        self.books.blocks.setdefault(order_id, reason)

    async def wallet_frozen(self, user_id: str, currency: str) -> bool:
        return f"wallet:{user_id}:{currency}" in self.books.frozen

    def publish(self, topic: Topic, message: Message, *, event_id: str | None = None) -> None:
        self.books.published.append(message)


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
