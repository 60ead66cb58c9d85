"""What the payments use cases need from the outside world."""

from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from contracts.base import Message
from contracts.topics import Topic
from payments.domain import Order


@dataclass(frozen=True, slots=True)
class RefundAnswer:
    """A provider's answer to a refund request or query: succeeded, failed, or unknown (timed out)."""

    status: str
    refund_id: str = ""
    reason: str = ""


class RefundProvider(Protocol):
    """A payment provider's refund API. `key` makes a repeated request idempotent at the provider."""

    async def refund(
        self, provider: str, provider_txn_id: str, amount: int, currency: str, key: str
    ) -> RefundAnswer: ...

    async def query(self, provider: str, key: str) -> RefundAnswer: ...


class PaymentsUnitOfWork(Protocol):
    """One atomic change to orders, with its audit rows and outgoing events."""

    async def __aenter__(self) -> "PaymentsUnitOfWork": ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None: ...

    async def add(self, order: Order) -> None: ...

    async def save(self, order: Order) -> None: ...

    async def has_cleared_topup(self, user_id: str, excluding: str) -> bool:
        """Whether the user has another order that was paid and not held for review (or held and released)."""
        ...

    async def claim_idempotency_key(self, key: str, fingerprint: str, order_id: str) -> tuple[str, str]:
        """Bind `key` to `order_id` unless it is bound already; return the (fingerprint, order id) it holds."""
        ...

    async def record_callback(
        self, *, provider: str, order_id: str | None, outcome: str, reason: str, signature: str | None, body: bytes
    ) -> None: ...

    def publish(self, topic: Topic, message: Message, *, event_id: str | None = None) -> None: ...

    async def mark_processed(self, consumer: str, event_id: str) -> bool: ...

    async def refund_of(self, order_id: str) -> RefundAnswer | None: ...

    async def save_refund(self, order_id: str, answer: RefundAnswer, attempts: int) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> PaymentsUnitOfWork: ...


class Clock(Protocol):
    def now(self) -> float:
        """Unix seconds."""
        ...
