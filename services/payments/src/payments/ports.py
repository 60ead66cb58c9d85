"""What the payments use cases need from the outside world."""

from collections.abc import Mapping
from types import TracebackType
from typing import Protocol

from contracts.base import Message
from contracts.topics import Topic
from payments.domain import (
    CallbackAck,
    CloseAnswer,
    Order,
    PaymentQuery,
    ProviderReply,
    RefundRequest,
    VerifiedCallback,
)
from payments.domain import RefundAnswer as RefundAnswer  # moved to the domain with the other provider answers


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


class PaymentProvider(Protocol):
    """A payment provider as payments speaks to it: its signed callbacks in, its merchant API out. One
    adapter per provider (simulated, WeChat Pay, Alipay), registered by name. Amounts are integer minor
    units both ways; the adapter converts to the provider's own form. Calls that reach the provider never
    raise for a provider's failure or silence: they answer "unknown" and the caller asks again."""

    @property
    def name(self) -> str:
        """The name orders and callbacks know this provider by (`/v1/psp/{name}/callbacks`)."""
        ...

    async def verify_callback(self, body: bytes, headers: Mapping[str, str]) -> VerifiedCallback:
        """Check a callback's signature over its raw body, its freshness and its merchant, then read it;
        raise CallbackRejected when any of that fails. `headers` are looked up case-insensitively."""
        ...

    def reply(self, ack: CallbackAck) -> ProviderReply:
        """The answer, in the provider's form, for a callback payments took or refused as `ack` says.
        An accepted ack tells the provider to stop sending; any other makes it send again later."""
        ...

    async def query_payment(self, order_id: str) -> PaymentQuery:
        """Ask the provider what became of the payment for our order `order_id`."""
        ...

    async def refund(self, request: RefundRequest) -> RefundAnswer:
        """Ask for a refund, idempotent at the provider by `request.refund_id`."""
        ...

    async def query_refund(self, order_id: str, refund_id: str) -> RefundAnswer:
        """Ask what became of our refund `refund_id` of order `order_id`."""
        ...

    async def close(self, order_id: str) -> CloseAnswer:
        """Close our unpaid order at the provider so that the user can no longer pay it."""
        ...

    async def aclose(self) -> None:
        """Release the adapter's connections (at shutdown)."""
        ...


class PaymentProviders(Protocol):
    """The provider adapters by name."""

    def get(self, name: str) -> PaymentProvider | None:
        """The adapter registered as `name`, or None."""
        ...

    @property
    def names(self) -> frozenset[str]: ...
