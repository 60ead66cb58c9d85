"""What the ledger use cases need from the outside world."""

from types import TracebackType
from typing import Protocol

from contracts.base import Message
from contracts.topics import Topic
from ledger.domain import CreditContext, Posting
from ledger.domain import Posted as PostedCredit


class LedgerUnitOfWork(Protocol):
    """One atomic change to the ledger, with the processed event id and outgoing events."""

    async def __aenter__(self) -> "LedgerUnitOfWork": ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def mark_processed(self, consumer: str, event_id: str) -> bool: ...

    async def post(self, posting: Posting) -> bool:
        """Write the posting and move balances; False (and nothing written) if the order already has one."""
        ...

    async def record_fault(self, order_id: str, kind: str) -> None: ...

    async def lock_order(self, order_id: str) -> None:
        """Serialise every credit and block decision for one order until the unit of work ends."""
        ...

    async def credit_of(self, order_id: str) -> PostedCredit | None:
        """The order's credit, if it has one."""
        ...

    async def block(self, order_id: str, reason: str, *, overwrite: bool = False) -> None:
        """Never credit the order from now on; `overwrite` replaces the reason of an existing block."""
        ...

    async def credit_context(self, order_id: str, user_id: str, currency: str) -> CreditContext:
        """Everything that decides a credit for the order, read at once."""
        ...

    async def register_user(self, user_id: str, currency: str) -> str:
        """Register the user with `currency` unless known; return the currency their wallet is kept in."""
        ...

    def publish(self, topic: Topic, message: Message, *, event_id: str | None = None) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> LedgerUnitOfWork: ...
