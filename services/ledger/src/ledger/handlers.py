"""Ledger use cases: credit a paid order exactly once."""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from contracts.codec import Envelope, deterministic_id
from contracts.events import CreditPosted, PaymentSucceeded
from contracts.topics import Topic
from ledger import domain
from ledger.ports import UnitOfWorkFactory

log = logging.getLogger(__name__)

PAYMENTS_CONSUMER = "ledger.payments"


@dataclass(frozen=True, slots=True)
class FaultPolicy:
    """Development only: the share of orders whose credit step is deliberately dropped (ground truth kept)."""

    drop_credit_share: float = 0.0


async def handle_payment_succeeded(
    message: PaymentSucceeded, envelope: Envelope, *, uow: UnitOfWorkFactory, faults: FaultPolicy
) -> None:
    """A paid order is owed a credit: post it once, however often the payment event arrives."""
    async with uow() as tx:
        if not await tx.mark_processed(PAYMENTS_CONSUMER, envelope.event_id):
            log.info("payment event %s for order %s already applied", envelope.event_id, message.order_id)
            return
        if domain.drops_credit(message.order_id, faults.drop_credit_share):
            await tx.record_fault(message.order_id, "credit_dropped")
            log.warning(
                "fault injection: dropped the credit of order %s (event %s)", message.order_id, envelope.event_id
            )
            return
        posting = domain.credit(message.order_id, message.user_id, message.amount, message.currency)
        if not await tx.post(posting):
            log.info("order %s already credited, event %s has no effect", message.order_id, envelope.event_id)
            return
        tx.publish(
            Topic.LEDGER_EVENTS,
            CreditPosted(
                order_id=message.order_id,
                user_id=message.user_id,
                amount=message.amount,
                currency=message.currency,
                transaction_id=posting.transaction_id,
                credited_at=datetime.now(UTC),
            ),
            event_id=deterministic_id("CreditPosted", message.order_id),
        )
    log.debug("credited order %s: %d %s", message.order_id, message.amount, message.currency)
