"""InMemoryLedger: the ledger unit of work in memory, for the use-case and stateful tests."""

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType

from contracts.base import Message
from contracts.topics import Topic
from ledger.domain import AccountKind, BooksView, Changes, OrderBooks, PaymentFact, PendingBlock, Posted, Posting


@dataclass
class Books:
    postings: dict[tuple[str, str], Posting] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    processed: set[tuple[str, str]] = field(default_factory=set)
    faults: set[str] = field(default_factory=set)
    published: list[Message] = field(default_factory=list)
    event_ids: list[str | None] = field(default_factory=list)
    """The event id each published message went out under, in order."""
    blocks: dict[str, str] = field(default_factory=dict)
    frozen: set[str] = field(default_factory=set)
    users: dict[str, str] = field(default_factory=dict)
    credited_at: dict[str, datetime] = field(default_factory=dict)
    locked: list[list[str]] = field(default_factory=list)
    facts: dict[str, PaymentFact] = field(default_factory=dict)
    parked: dict[str, PaymentFact] = field(default_factory=dict)
    pending_blocks: dict[str, PendingBlock] = field(default_factory=dict)


class InMemoryLedger:
    """Applies a unit of work's writes to `books` as they are made (the fake has no rollback)."""

    def __init__(self, books: Books) -> None:
        self.books = books

    async def __aenter__(self) -> "InMemoryLedger":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def lock_orders(self, order_ids: Collection[str]) -> None:
        self.books.locked.append(sorted(order_ids))

    async def mark_processed_many(self, events: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        new = {event for event in events if event not in self.books.processed}
        self.books.processed |= new
        return new

    async def books_of(self, *, orders: Collection[str], users: Collection[str], wallets: Collection[str]) -> BooksView:
        view = BooksView()
        for order_id in orders:
            view.orders[order_id] = OrderBooks(
                self._credit_of(order_id),
                (order_id, "compensation") in self.books.postings,
                self.books.blocks.get(order_id),
            )
        view.facts = {o: self.books.facts[o] for o in orders if o in self.books.facts}
        view.parked = {o: self.books.parked[o] for o in orders if o in self.books.parked}
        view.pending_blocks = {o: self.books.pending_blocks[o] for o in orders if o in self.books.pending_blocks}
        view.users = {u: self.books.users[u] for u in users if u in self.books.users}
        view.frozen = {w for w in wallets if w in self.books.frozen}
        return view

    async def apply(self, changes: Changes) -> None:
        assert not changes.registrations.keys() & self.books.users.keys(), "registered a known user"
        self.books.users |= changes.registrations
        assert not changes.blocks.keys() & changes.unblocks, "blocked and unblocked an order in one batch"
        self.books.blocks |= changes.blocks
        for order_id in changes.unblocks:
            self.books.blocks.pop(order_id, None)  # blocked earlier in the same batch: never stored
        self.books.faults |= set(changes.dropped)
        assert not changes.facts.keys() & self.books.facts.keys(), "recorded a payment fact twice"
        self.books.facts |= changes.facts
        for parked in changes.parked:
            self.books.parked.setdefault(parked.message.order_id, parked.claim)
        for order_id in changes.unparked:
            self.books.parked.pop(order_id, None)
            self.books.pending_blocks.pop(order_id, None)
        for order_id, block in changes.pending_blocks.items():
            assert order_id in self.books.parked, f"a block for {order_id} waits with no parked retry"
            self.books.pending_blocks[order_id] = block
        for posting, at in changes.postings:
            key = (posting.order_id, posting.kind)
            assert key not in self.books.postings, f"posted {key} twice"
            self.books.postings[key] = posting
            if posting.kind == "credit":
                self.books.credited_at[posting.order_id] = at
            for e in posting.entries:
                self.books.balances[e.account.account_id] = self.books.balances.get(e.account.account_id, 0) + e.amount

    def _credit_of(self, order_id: str) -> Posted | None:
        posting = self.books.postings.get((order_id, "credit"))
        if posting is None:
            return None
        wallet = next(e for e in posting.entries if e.account.kind is AccountKind.WALLET)
        return Posted(
            posting.transaction_id,
            wallet.account.user_id or "",
            wallet.amount,
            wallet.account.currency,
            self.books.credited_at[order_id],
        )

    def publish(self, topic: Topic, message: Message, *, event_id: str | None = None) -> None:
        self.books.published.append(message)
        self.books.event_ids.append(event_id)

    def after_commit(self, callback: Callable[[], None]) -> None:
        callback()  # the fake has no rollback: its writes are made already
