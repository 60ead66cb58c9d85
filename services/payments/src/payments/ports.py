"""What the payments use cases need from the outside world."""

from types import TracebackType
from typing import Protocol

from contracts.base import Message
from contracts.topics import Topic
from payments.domain import Order


class PaymentsUnitOfWork(Protocol):
    """One atomic change to orders, with its audit rows and outgoing events."""

    async def __aenter__(self) -> "PaymentsUnitOfWork": ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None: ...

    async def add(self, order: Order) -> None: ...

    async def save(self, order: Order) -> None: ...

    async def claim_idempotency_key(self, key: str, fingerprint: str, order_id: str) -> tuple[str, str]:
        """Bind `key` to `order_id` unless it is bound already; return the (fingerprint, order id) it holds."""
        ...

    async def record_callback(
        self, *, provider: str, order_id: str | None, outcome: str, reason: str, signature: str | None, body: bytes
    ) -> None: ...

    def publish(self, topic: Topic, message: Message, *, event_id: str | None = None) -> None: ...

    async def mark_processed(self, consumer: str, event_id: str) -> bool: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> PaymentsUnitOfWork: ...


class Clock(Protocol):
    def now(self) -> float:
        """Unix seconds."""
        ...
