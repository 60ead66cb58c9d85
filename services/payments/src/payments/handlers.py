"""Payments use cases: place orders, follow each order's lifecycle status. Provider callbacks are in
payments.callbacks, risk review in payments.review, refunds in payments.refunds.

Orders are placed in groups: the HTTP adapter gathers the requests that arrive together and places them in
one transaction, each answered after that commit. A group of one is the plain case.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from contracts.codec import Envelope, deterministic_id
from contracts.events import OrderPlaced, OrderStatus, OrderStatusChanged
from contracts.topics import Topic
from payments import domain
from payments.domain import Order, PaymentStatus
from payments.ports import Announcement, Clock, KeyHolder, NewOrder, OrderBook, StatusBook, StatusChange
from payments.schedule import QueryPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """A user asks to top up `amount` minor units of `currency` through `channel`."""

    user_id: str
    amount: int
    currency: str
    channel: str
    idempotency_key: str | None = None
    product: str | None = None
    owner: str | None = None
    """The name of the API key the request came with: an Idempotency-Key is its owner's alone."""
    order_id: str = field(default_factory=domain.new_order_id)
    """The id of the order this request places, made with the request: a group that fails after its commit is
    handled again one request at a time, and a request handled again finds its order instead of placing another."""


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request body, or by another API key."""


Placed = tuple[Order, bool] | IdempotencyConflict
"""An order and whether this request created it, or the conflict that refused the request."""


def _new_order(cmd: PlaceOrder, now: datetime, queries: QueryPolicy | None) -> NewOrder:
    order = Order(
        order_id=cmd.order_id,
        user_id=cmd.user_id,
        amount=cmd.amount,
        currency=cmd.currency,
        channel=cmd.channel,
        payment_status=PaymentStatus.PENDING,
        status="submitted",
        created_at=now,
        product=cmd.product,
    )
    fingerprint = domain.fingerprint(cmd.user_id, cmd.amount, cmd.currency, cmd.channel, cmd.product)
    return NewOrder(order, cmd.idempotency_key, fingerprint, queries.first(order) if queries else None, cmd.owner)


async def handle_place_orders(
    cmds: Sequence[PlaceOrder], *, book: OrderBook, clock: Clock, queries: QueryPolicy | None = None
) -> list[Placed]:
    """Create the orders, in one transaction, each with its OrderPlaced and (when `queries` names a provider for
    its channel) its first payment query; a request whose Idempotency-Key made an order before gets that order
    (not new), or a conflict if its body differs. A request handled before gets the order it placed then (new)."""
    now = datetime.fromtimestamp(clock.now(), UTC)
    new = list({cmd.order_id: _new_order(cmd, now, queries) for cmd in cmds}.values())  # one per request submitted
    holders = await book.place(new, [_placed_event(n.order) for n in new])
    earlier = await book.find_many({h.order_id for h in holders if h is not None})
    placed = {n.order.order_id: _placed(n, h, earlier) for n, h in zip(new, holders, strict=True)}
    for n, holder in zip(new, holders, strict=True):
        if holder is None:
            order = n.order
            log.info("order %s placed for user %s: %d %s", order.order_id, order.user_id, order.amount, order.currency)
    return [placed[cmd.order_id] for cmd in cmds]


async def handle_place_order(cmd: PlaceOrder, *, book: OrderBook, clock: Clock) -> tuple[Order, bool]:
    """Create the order (or return the one this Idempotency-Key made); True when it is new."""
    (result,) = await handle_place_orders([cmd], book=book, clock=clock)
    if isinstance(result, IdempotencyConflict):
        raise result
    return result


def _placed(new: NewOrder, holder: KeyHolder | None, earlier: dict[str, Order]) -> Placed:
    if holder is None:
        return new.order, True
    if holder.owner is not None and holder.owner != new.owner:  # never another caller's order and status link
        return IdempotencyConflict(f"Idempotency-Key {new.key!r} was used by another API key")
    if holder.fingerprint != new.fingerprint:
        return IdempotencyConflict(f"Idempotency-Key {new.key!r} was used for a different order request")
    return earlier[holder.order_id], holder.order_id == new.order.order_id  # its own order, placed before


def _placed_event(order: Order) -> Announcement:
    placed = OrderPlaced(
        order_id=order.order_id,
        user_id=order.user_id,
        amount=order.amount,
        currency=order.currency,
        channel=order.channel,
        product=order.product,
        placed_at=order.created_at,
    )
    return Announcement(Topic.PAYMENTS_EVENTS, placed, deterministic_id("OrderPlaced", order.order_id))


async def handle_status_changes(
    changes: Sequence[tuple[OrderStatusChanged, Envelope]], *, statuses: StatusBook
) -> list[OrderStatus]:
    """Keep each order's lifecycle status current, a consumer's poll at once, ignoring changes older than what
    we have; the statuses applied, in order."""
    applied = await statuses.apply(
        [StatusChange(message.order_id, message.status.value, message.sequence) for message, _ in changes]
    )
    for (message, envelope), done in zip(changes, applied, strict=True):
        if done is None:
            log.warning(
                "status %s for unknown order %s (event %s)", message.status, message.order_id, envelope.event_id
            )
    return [message.status for (message, _), done in zip(changes, applied, strict=True) if done]
