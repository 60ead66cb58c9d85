"""Ledger use cases: credit a paid order exactly once; retry, block and compensate on the reconciler's command.

Every credit and block decision for an order runs under that order's lock, so "credited" and "blocked"
exclude each other: a refund is only ever issued for an order the ledger has blocked.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from contracts.codec import Envelope, deterministic_id
from contracts.commands import BlockCredit, GrantCompensation, RetryCredit
from contracts.events import CreditPosted, CreditRejected, PaymentSucceeded
from contracts.topics import Topic
from ledger import domain
from ledger.ports import LedgerUnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)

PAYMENTS_CONSUMER = "ledger.payments"
COMMANDS_CONSUMER = "ledger.commands"


@dataclass(frozen=True, slots=True)
class FaultPolicy:
    """Development only: the share of orders whose credit step is deliberately dropped (ground truth kept)."""

    drop_credit_share: float = 0.0


def _announce_credit(
    tx: LedgerUnitOfWork, message: PaymentSucceeded | RetryCredit, transaction_id: str, tag: str
) -> None:
    tx.publish(
        Topic.LEDGER_EVENTS,
        CreditPosted(
            order_id=message.order_id,
            user_id=message.user_id,
            amount=message.amount,
            currency=message.currency,
            transaction_id=transaction_id,
            credited_at=datetime.now(UTC),
        ),
        event_id=deterministic_id("CreditPosted", message.order_id, tag),
    )


def _reject(tx: LedgerUnitOfWork, order_id: str, user_id: str, reason: str, final: bool, tag: str) -> None:
    tx.publish(
        Topic.LEDGER_EVENTS,
        CreditRejected(order_id=order_id, user_id=user_id, reason=reason, final=final, rejected_at=datetime.now(UTC)),
        event_id=deterministic_id("CreditRejected", order_id, tag),
    )


async def _credit(tx: LedgerUnitOfWork, message: PaymentSucceeded | RetryCredit, tag: str) -> str:
    """Credit once, under the order's lock; returns what happened."""
    await tx.lock_order(message.order_id)
    existing = await tx.credit_of(message.order_id)
    if existing is not None:
        if isinstance(message, RetryCredit):  # re-announce so the reconciler can close the order
            _announce_credit(tx, message, existing.transaction_id, f"reannounce-{tag}")
        return "already_credited"
    blocked = await tx.block_of(message.order_id)
    if blocked is not None:
        _reject(tx, message.order_id, message.user_id, f"blocked: {blocked}", True, tag)
        return "blocked"
    if await tx.wallet_frozen(message.user_id, message.currency):
        await tx.block(message.order_id, "wallet frozen")
        _reject(tx, message.order_id, message.user_id, "wallet frozen", True, tag)
        return "rejected"
    posting = domain.credit(message.order_id, message.user_id, message.amount, message.currency)
    await tx.post(posting)
    _announce_credit(tx, message, posting.transaction_id, "credit")
    return "credited"


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
        outcome = await _credit(tx, message, f"payment-{envelope.event_id}")
    log.info("order %s: %s (event %s)", message.order_id, outcome, envelope.event_id)


async def handle_retry_credit(message: RetryCredit, envelope: Envelope, *, uow: UnitOfWorkFactory) -> None:
    """The reconciler found the order overdue: credit it now, or re-announce the credit it already has."""
    async with uow() as tx:
        if not await tx.mark_processed(COMMANDS_CONSUMER, envelope.event_id):
            return
        outcome = await _credit(tx, message, f"retry-{message.attempt}")
    log.warning("order %s: retry %d -> %s (event %s)", message.order_id, message.attempt, outcome, envelope.event_id)


async def handle_block_credit(message: BlockCredit, envelope: Envelope, *, uow: UnitOfWorkFactory) -> None:
    """Before a refund: make sure the order is never credited, or say that it already was."""
    async with uow() as tx:
        if not await tx.mark_processed(COMMANDS_CONSUMER, envelope.event_id):
            return
        await tx.lock_order(message.order_id)
        existing = await tx.credit_of(message.order_id)
        if existing is not None:
            tx.publish(
                Topic.LEDGER_EVENTS,
                CreditPosted(
                    order_id=message.order_id,
                    user_id=existing.user_id,
                    amount=existing.amount,
                    currency=existing.currency,
                    transaction_id=existing.transaction_id,
                    credited_at=existing.created_at,
                ),
                event_id=deterministic_id("CreditPosted", message.order_id, "reannounce-block"),
            )
            log.warning("order %s was credited already; block refused (event %s)", message.order_id, envelope.event_id)
            return
        await tx.block(message.order_id, message.reason)
        _reject(tx, message.order_id, message.user_id, f"blocked: {message.reason}", True, "block")
    log.warning("order %s blocked from crediting: %s (event %s)", message.order_id, message.reason, envelope.event_id)


async def handle_grant_compensation(message: GrantCompensation, envelope: Envelope, *, uow: UnitOfWorkFactory) -> None:
    """A late credit earns a delay compensation, once per order."""
    async with uow() as tx:
        if not await tx.mark_processed(COMMANDS_CONSUMER, envelope.event_id):
            return
        granted = await tx.post(
            domain.compensation(message.order_id, message.user_id, message.amount, message.currency)
        )
    log.info(
        "order %s compensation %s (event %s)",
        message.order_id,
        "granted" if granted else "already granted",
        envelope.event_id,
    )
