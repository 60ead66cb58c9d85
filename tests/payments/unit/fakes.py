"""InMemoryPayments: the payments unit of work in memory, for the use-case tests."""

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from contracts.base import Message
from contracts.events import CaseRequested
from contracts.topics import Topic
from payments import domain
from payments.domain import REFUNDS_IN_FLIGHT, Order, RefundRequest
from payments.ports import (
    Announcement,
    DueRefund,
    KeyHolder,
    NewOrder,
    RefundAnswer,
    RefundsInFlight,
    StatusChange,
)

DEVELOPMENT_PAYERS = domain.Payers({"alipay": "alipay", "wechat": "wechatpay"}, frozenset({"sim"}))
"""Who may pay which channel in development: the `sim` provider these tests sign with pays every channel."""


@dataclass
class Store:
    orders: dict[str, Order] = field(default_factory=dict)
    keys: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    published: list[tuple[Topic, Message, str | None]] = field(default_factory=list)
    processed: set[tuple[str, str]] = field(default_factory=set)
    refunds: dict[str, tuple[RefundAnswer, int]] = field(default_factory=dict)
    refund_asks: dict[str, tuple[datetime | None, str]] = field(default_factory=dict)
    """A refund's next ask (None once its outcome is known) and the reason it was requested with."""
    refunds_requested_at: dict[str, datetime] = field(default_factory=dict)
    cases: dict[str, tuple[CaseRequested, str]] = field(default_factory=dict)
    """Open support cases by order and kind (`order_id/kind`): the request and the event id that opened it."""


class InMemoryPayments:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def __aenter__(self) -> "InMemoryPayments":
        self._orders = dict(self.store.orders)
        self._keys = dict(self.store.keys)
        self._callbacks: list[dict[str, Any]] = []
        self._published: list[tuple[Topic, Message, str | None]] = []
        self._cases: dict[str, tuple[CaseRequested, str]] = {}
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.store.callbacks += self._callbacks  # audit survives like a committed row only on commit
        if exc_type is None:
            self.store.orders, self.store.keys = self._orders, self._keys
            self.store.published += self._published
            self.store.cases.update(self._cases)

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        return self._orders.get(order_id)

    async def get_many(self, order_ids: Collection[str], *, for_update: bool = False) -> dict[str, Order]:
        return {oid: self._orders[oid] for oid in sorted(order_ids) if oid in self._orders}

    async def save(self, order: Order) -> None:
        self._orders[order.order_id] = order

    async def cleared_users(self, user_ids: Collection[str], excluding: Collection[str]) -> set[str]:
        return {
            o.user_id
            for o in self._orders.values()
            if o.user_id in user_ids
            and o.order_id not in excluding
            and o.payment_status.value == "succeeded"
            and o.review_status in (None, "released")
        }

    async def record_callback(self, **row: Any) -> None:
        self._callbacks.append(row)

    async def open_case(self, request: CaseRequested, event_id: str) -> bool:
        key = f"{request.order_id}/{request.kind.value}"
        cases = {**self.store.cases, **self._cases}
        if key in cases or any(opened == event_id for _, opened in cases.values()):
            return False
        self._cases[key] = (request, event_id)
        return True

    def publish(self, topic: Topic, message: Message, *, event_id: str | None = None) -> None:
        self._published.append((topic, message, event_id))

    async def refund_of(self, order_id: str) -> RefundAnswer | None:
        done = self.store.refunds.get(order_id)
        return None if done is None else done[0]

    async def begin_refund(self, request: RefundRequest, due_at: datetime) -> None:
        if request.order_id not in self.store.refunds:
            self.store.refunds[request.order_id] = (RefundAnswer("requested"), 0)
            self.store.refund_asks[request.order_id] = (due_at, request.reason)
            self.store.refunds_requested_at[request.order_id] = datetime.now(UTC)

    async def save_refund(
        self, order_id: str, answer: RefundAnswer, attempts: int, due_at: datetime | None = None
    ) -> bool:
        held = self.store.refunds.get(order_id)
        if held is None or held[0].status not in REFUNDS_IN_FLIGHT:
            return False
        status = held[0].status if answer.status == "unknown" else answer.status
        self.store.refunds[order_id] = (
            RefundAnswer(status, answer.refund_id or held[0].refund_id, answer.reason),
            attempts,
        )
        self.store.refund_asks[order_id] = (due_at, self.store.refund_asks[order_id][1])
        return True

    async def claim_refunds(self, now: datetime, lease_until: datetime, limit: int) -> list[DueRefund]:
        due = sorted(
            (asked[0], order_id)
            for order_id, asked in self.store.refund_asks.items()
            if self.store.refunds[order_id][0].status in REFUNDS_IN_FLIGHT and asked[0] is not None and asked[0] <= now
        )[:limit]
        taken = []
        for _, order_id in due:
            answer, attempts = self.store.refunds[order_id]
            self.store.refunds[order_id] = (answer, attempts + 1)
            reason = self.store.refund_asks[order_id][1]
            self.store.refund_asks[order_id] = (lease_until, reason)
            requested_at = self.store.refunds_requested_at[order_id]
            taken.append(DueRefund(order_id, answer.status, reason, attempts + 1, requested_at))
        return taken

    async def refunds_in_flight(self) -> list[RefundsInFlight]:
        by_status: dict[str, list[datetime]] = {}
        for order_id, (answer, _) in self.store.refunds.items():
            if answer.status in REFUNDS_IN_FLIGHT:
                by_status.setdefault(answer.status, []).append(self.store.refunds_requested_at[order_id])
        return [RefundsInFlight(status, len(at), min(at)) for status, at in by_status.items()]

    async def mark_processed(self, consumer: str, event_id: str) -> bool:
        if (consumer, event_id) in self.store.processed:
            return False
        self.store.processed.add((consumer, event_id))
        return True


class FixedClock:
    def __init__(self, now: float) -> None:
        self.value = now

    def now(self) -> float:
        return self.value


class InMemoryStatusBook:
    """Order statuses in the store, by the domain's rule (newest sequence wins)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def apply(self, changes: Sequence[StatusChange]) -> list[bool | None]:
        results: list[bool | None] = []
        for order_id, status, sequence in changes:
            order = self.store.orders.get(order_id)
            if order is None:
                results.append(None)
                continue
            updated = domain.apply_status(order, status, sequence)
            if updated is not None:
                self.store.orders[order_id] = updated
            results.append(updated is not None)
        return results


class InMemoryOrderBook:
    """New orders, keys and their announcements in the store, all or nothing per call like the real one."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def place(self, orders: Sequence[NewOrder], announcements: Sequence[Announcement]) -> list[KeyHolder | None]:
        holders: list[KeyHolder | None] = []
        for new, announcement in zip(orders, announcements, strict=True):
            if new.key is not None and new.key in self.store.keys:
                holders.append(KeyHolder(*self.store.keys[new.key]))
                continue
            if new.order.order_id in self.store.orders:  # its request was handled before
                holders.append(KeyHolder(new.fingerprint, new.order.order_id, new.owner))
                continue
            if new.key is not None:
                self.store.keys[new.key] = (new.fingerprint, new.order.order_id, new.owner)
            self.store.orders[new.order.order_id] = new.order
            self.store.published.append((announcement.topic, announcement.message, announcement.event_id))
            holders.append(None)
        return holders

    async def find_many(self, order_ids: Collection[str]) -> dict[str, Order]:
        return {oid: self.store.orders[oid] for oid in order_ids if oid in self.store.orders}
