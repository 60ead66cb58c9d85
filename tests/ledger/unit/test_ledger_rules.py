from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

import pytest

from contracts.base import Message
from contracts.codec import envelope_for
from contracts.events import CreditPosted, PaymentSucceeded
from contracts.topics import Topic
from ledger import domain
from ledger.domain import AccountKind, Entry, Posting
from ledger.handlers import FaultPolicy, handle_payment_succeeded


@dataclass
class Books:
    postings: dict[tuple[str, str], Posting] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    processed: set[tuple[str, str]] = field(default_factory=set)
    faults: set[str] = field(default_factory=set)
    published: list[Message] = field(default_factory=list)


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
