"""Risk review: the risk team releases or rejects an order that payments held when it was paid.

Design: while an order is held, payments publishes OrderHeld and no PaymentSucceeded, so the ledger
(which credits on PaymentSucceeded) cannot credit it and needs no notion of holds. A release publishes
OrderReleased, then the PaymentSucceeded that was held back, in one transaction: the ledger credits as
usual. A rejection publishes OrderReviewRejected; the reconciler answers it with BlockCredit and, once
the ledger has confirmed the block, IssueRefund, which payments executes like any other refund. So a
rejected order is refunded by the same path that guarantees credited money is never refunded.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from contracts.codec import deterministic_id
from contracts.events import OrderReleased, OrderReviewRejected
from contracts.topics import Topic
from payments import domain
from payments.announcements import announce_payment
from payments.domain import Order, ReviewVerdict
from payments.ports import Clock, UnitOfWorkFactory

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReviewDecision:
    """The risk team's verdict on a held order, with a reason and the deciding API key (id, name) for the record."""

    order_id: str
    verdict: ReviewVerdict
    reason: str = ""
    decider: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ReviewResult:
    """The HTTP answer: status code, stable code, a sentence, and the order when it exists."""

    status_code: int
    code: str
    detail: str
    order: Order | None = None


_REFUSALS = {
    "not_under_review": (409, "the order is not under risk review"),
    "review_decided": (409, "the review of this order was decided the other way already"),
}


async def handle_review_decision(cmd: ReviewDecision, *, uow: UnitOfWorkFactory, clock: Clock) -> ReviewResult:
    """Release or reject a held order once; the same verdict again changes nothing."""
    now = datetime.fromtimestamp(clock.now(), UTC)
    async with uow() as tx:
        order = await tx.get(cmd.order_id, for_update=True)
        if order is None:
            return ReviewResult(404, "unknown_order", f"no order {cmd.order_id}")
        outcome, decided = domain.decide_review(order, cmd.verdict, now, cmd.decider, cmd.reason)
        if outcome in _REFUSALS:
            status, detail = _REFUSALS[outcome]
            return ReviewResult(status, outcome, f"{detail} (review status: {order.review_status})", order)
        if decided is None:
            return ReviewResult(200, "duplicate", f"the order was {order.review_status} already", order)
        await tx.save(decided)
        if cmd.verdict is ReviewVerdict.RELEASE:
            tx.publish(
                Topic.PAYMENTS_EVENTS,
                OrderReleased(order_id=order.order_id, user_id=order.user_id, reason=cmd.reason, released_at=now),
                event_id=deterministic_id("OrderReleased", order.order_id),
            )
            announce_payment(tx, decided, now)
        else:
            tx.publish(
                Topic.PAYMENTS_EVENTS,
                OrderReviewRejected(
                    order_id=order.order_id, user_id=order.user_id, reason=cmd.reason or "rejected", rejected_at=now
                ),
                event_id=deterministic_id("OrderReviewRejected", order.order_id),
            )
    log.warning(
        "order %s review: %s (%s) by key %s",
        cmd.order_id,
        decided.review_status,
        cmd.reason,
        decided.reviewed_by_key_id,
    )
    return ReviewResult(200, "applied", f"the order is {decided.review_status}", decided)
