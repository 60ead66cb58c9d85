"""What the ledger use cases need from the outside world."""

from collections.abc import Callable, Collection, Sequence
from types import TracebackType
from typing import Protocol

from contracts.base import Message
from contracts.topics import Topic
from ledger.domain import BooksView, Changes


class LedgerUnitOfWork(Protocol):
    """One atomic change to the ledger, with the processed event ids and outgoing events."""

    async def __aenter__(self) -> "LedgerUnitOfWork": ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def lock_orders(self, order_ids: Collection[str]) -> None:
        """Serialise every credit and block decision for these orders until the unit of work ends. The locks are
        taken in one fixed order, so two batches sharing orders wait for each other and never deadlock."""
        ...

    async def mark_processed_many(self, events: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Record the (consumer, event id) pairs as applied; return those not recorded before."""
        ...

    async def books_of(self, *, orders: Collection[str], users: Collection[str], wallets: Collection[str]) -> BooksView:
        """The books of these orders, the wallet currencies of these users and which of these wallets are frozen,
        as they are now (under the orders' locks)."""
        ...

    async def apply(self, changes: Changes) -> None:
        """Write the changes decided on a view of the books, set-based: postings with their entries and balances
        (each account moved once), blocks and the blocks lifted, registrations, dropped credits, payment facts,
        parked retries (one row per order, counting its retries) and the parked retries their payment clears.
        Raises, writing nothing, if another writer changed the books those decisions rest on (a posting or a
        registration already there)."""
        ...

    def publish(self, topic: Topic, message: Message, *, event_id: str | None = None) -> None: ...

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once this unit's changes are committed; never if they roll back."""
        ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> LedgerUnitOfWork: ...
