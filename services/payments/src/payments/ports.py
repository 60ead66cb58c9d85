"""What the payments use cases need from the outside world."""

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import NamedTuple, Protocol

from contracts.base import Message
from contracts.events import CaseRequested
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
from payments.schedule import ScheduledQuery


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """An Idempotency-Key bound already: the fingerprint of the request that bound it, its order, and the name of
    the API key that bound it (None for a key bound before owners were recorded)."""

    fingerprint: str
    order_id: str
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class NewOrder:
    """An order to insert, with the Idempotency-Key (if any) its request came with and that request's fingerprint,
    the first query of its provider (if payments asks one), written with it, and the name of the API key the
    request came with (the Idempotency-Key's owner)."""

    order: Order
    key: str | None
    fingerprint: str
    query: ScheduledQuery | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class Announcement:
    """An event to publish once its order exists: the topic, the message and its event id."""

    topic: Topic
    message: Message
    event_id: str


class OrderBook(Protocol):
    """Where new orders and their idempotency keys are written, each with its OrderPlaced, atomically."""

    async def place(self, orders: Sequence[NewOrder], announcements: Sequence[Announcement]) -> list[KeyHolder | None]:
        """Insert each order whose Idempotency-Key is free (or that has none), binding the key to it, schedule
        its query and queue its announcement (`announcements[i]` belongs to `orders[i]`), all in one transaction.
        An order whose key is bound already (before, or by an earlier order of `orders`) is not inserted and
        nothing is scheduled or announced for it: its entry is the key's holder. An order that exists already (its
        request was handled before, in a group that failed after its commit) is not inserted again either: its entry
        is a holder naming that order, as its key's holder does."""
        ...

    async def find_many(self, order_ids: Collection[str]) -> dict[str, Order]:
        """The orders among `order_ids` that exist."""
        ...


@dataclass(frozen=True, slots=True)
class DueRefund:
    """A refund in flight taken to ask the provider about: its order, its state ("requested": the provider may
    never have had it; "pending": accepted, not finished), the reason it was requested with, the attempts, and
    when it was first requested."""

    order_id: str
    status: str
    reason: str
    attempts: int
    requested_at: datetime


@dataclass(frozen=True, slots=True)
class RefundsInFlight:
    """The refunds in flight in one state ("requested" or "pending"): how many, and when the oldest was requested."""

    status: str
    count: int
    oldest_requested_at: datetime


class PaymentsUnitOfWork(Protocol):
    """One atomic change to orders, with its audit rows and outgoing events. Changes may be written only
    when the unit commits; reads see what the unit changed so far only through the returned objects."""

    async def __aenter__(self) -> "PaymentsUnitOfWork": ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None: ...

    async def get_many(self, order_ids: Collection[str], *, for_update: bool = False) -> dict[str, Order]:
        """The orders among `order_ids` that exist; locked, with `for_update`, in order-id order, so two units
        locking overlapping orders never wait for each other in a cycle."""
        ...

    async def save(self, order: Order) -> None: ...

    async def cleared_users(self, user_ids: Collection[str], excluding: Collection[str]) -> set[str]:
        """The users among `user_ids` with a cleared top-up (paid and not held for review, or held and
        released) among their orders other than `excluding`."""
        ...

    async def record_callback(
        self, *, provider: str, order_id: str | None, outcome: str, reason: str, signature: str | None, body: bytes
    ) -> None: ...

    async def open_case(self, request: CaseRequested, event_id: str) -> bool:
        """Open a support case for `request` in this transaction: False when the order has an open case of its kind
        already, or `event_id` opened one before."""
        ...

    def publish(self, topic: Topic, message: Message, *, event_id: str | None = None) -> None: ...

    async def mark_processed(self, consumer: str, event_id: str) -> bool: ...

    async def refund_of(self, order_id: str) -> RefundAnswer | None:
        """The order's refund as on record: its outcome ("succeeded", "failed"), or "requested" / "pending" while
        the provider has not said how it ended; None if none was asked."""
        ...

    async def begin_refund(self, request: RefundRequest, due_at: datetime) -> None:
        """Record the refund as requested, before the provider is asked; asked again from `due_at` if nothing
        says how it went by then (the asker died)."""
        ...

    async def save_refund(
        self, order_id: str, answer: RefundAnswer, attempts: int, due_at: datetime | None = None
    ) -> bool:
        """Record the provider's answer to the refund in flight: its outcome, or (pending, unknown) that it is
        asked again from `due_at`. False when the refund was no longer in flight (another asker recorded it)."""
        ...

    async def claim_refunds(self, now: datetime, lease_until: datetime, limit: int) -> list[DueRefund]:
        """Take up to `limit` refunds in flight and due at `now`, each counted as one more attempt and not due
        again before `lease_until` (no other asker takes it meanwhile; it comes back if this one dies)."""
        ...

    async def refunds_in_flight(self) -> list[RefundsInFlight]:
        """The refunds in flight by state, each state with how many and when its oldest was requested; a state with
        none is left out. One aggregate read, cheap enough for every follow-up round."""
        ...


class StatusChange(NamedTuple):
    """One order's lifecycle status, numbered by the reconciler: the newest sequence wins."""

    order_id: str
    status: str
    sequence: int


class StatusBook(Protocol):
    """Where each order's lifecycle status is kept, newest sequence wins (a change is idempotent by itself)."""

    async def apply(self, changes: Sequence[StatusChange]) -> list[bool | None]:
        """Apply the changes as if one by one, in their order: each sets its order's status if its sequence is
        newer than the order's own. Per change: True when set, False when the order had this change or a newer
        one already, None when there is no such order."""
        ...


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
