"""InMemoryLedger: the ledger unit of work in memory, for the use-case and stateful tests."""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

from contracts.base import Message
from contracts.topics import Topic
from ledger.domain import AccountKind, CreditContext, Posted, Posting


@dataclass
class Books:
    postings: dict[tuple[str, str], Posting] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    processed: set[tuple[str, str]] = field(default_factory=set)
    faults: set[str] = field(default_factory=set)
    published: list[Message] = field(default_factory=list)
    blocks: dict[str, str] = field(default_factory=dict)
    frozen: set[str] = field(default_factory=set)
    users: dict[str, str] = field(default_factory=dict)
    credited_at: dict[str, datetime] = field(default_factory=dict)


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
        self.books.credited_at.setdefault(posting.order_id, datetime.now(UTC))
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
            self.books.credited_at[order_id],
        )

    async def block(self, order_id: str, reason: str, *, overwrite: bool = False) -> None:
        if overwrite:
            self.books.blocks[order_id] = reason
        else:
            self.books.blocks.setdefault(order_id, reason)

    async def credit_context(self, order_id: str, user_id: str, currency: str) -> CreditContext:
        return CreditContext(
            await self.credit_of(order_id),
            self.books.blocks.get(order_id),
            self.books.users.get(user_id),
            f"wallet:{user_id}:{currency}" in self.books.frozen,
        )

    async def register_user(self, user_id: str, currency: str) -> str:
        return self.books.users.setdefault(user_id, currency)

    def publish(self, topic: Topic, message: Message, *, event_id: str | None = None) -> None:
        self.books.published.append(message)
