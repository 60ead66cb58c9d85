"""Ledger use cases: credit a paid order exactly once; retry, block and compensate on the reconciler's command.

Every credit and block decision for an order runs under that order's lock, so "credited" and "blocked"
exclude each other: a refund is only ever issued for an order the ledger has blocked.
"""

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from contracts.codec import Envelope, deterministic_id
from contracts.commands import BlockCredit, GrantCompensation, RetryCredit
from contracts.events import CreditPosted, CreditRejected, PaymentSucceeded, RefundSucceeded
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


@dataclass(frozen=True, slots=True)
class UserPolicy:
    """Whether a user the ledger has never seen is registered by their first credit, in its currency."""

    register_on_first_credit: bool = True


def _announce_credit(tx: LedgerUnitOfWork, order_id: str, posted: domain.Posted, tag: str) -> None:
    tx.publish(
        Topic.LEDGER_EVENTS,
        CreditPosted(
            order_id=order_id,
            user_id=posted.user_id,
            amount=posted.amount,
            currency=posted.currency,
            transaction_id=posted.transaction_id,
            credited_at=posted.created_at,
        ),
        event_id=deterministic_id("CreditPosted", order_id, tag),
    )


def _reject(tx: LedgerUnitOfWork, order_id: str, user_id: str, reason: str, final: bool, tag: str) -> None:
    tx.publish(
        Topic.LEDGER_EVENTS,
        CreditRejected(order_id=order_id, user_id=user_id, reason=reason, final=final, rejected_at=datetime.now(UTC)),
        event_id=deterministic_id("CreditRejected", order_id, tag),
    )


async def _credit(tx: LedgerUnitOfWork, message: PaymentSucceeded | RetryCredit, tag: str, users: UserPolicy) -> str:
    """Credit once, under the order's lock; returns what happened."""
    await tx.lock_order(message.order_id)
    context = await tx.credit_context(message.order_id, message.user_id, message.currency)
    if context.credit is not None:
        if isinstance(message, RetryCredit):  # re-announce so the reconciler can close the order
            _announce_credit(tx, message.order_id, context.credit, f"reannounce-{tag}")
        return "already_credited"
    if context.user_currency is None and context.blocked is None and users.register_on_first_credit:
        currency = await tx.register_user(message.user_id, message.currency)
        context = replace(context, user_currency=currency)
    refused = domain.refusal(context, message.currency)
    if refused is not None:
        if refused.final and context.blocked is None:
            await tx.block(message.order_id, refused.reason)
        _reject(tx, message.order_id, message.user_id, refused.reason, refused.final, tag)
        return f"rejected ({refused.reason})"
    posting = domain.credit(message.order_id, message.user_id, message.amount, message.currency)
    await tx.post(posting)
    posted = domain.Posted(posting.transaction_id, message.user_id, message.amount, message.currency, datetime.now(UTC))
    _announce_credit(tx, message.order_id, posted, "credit")
    return "credited"


async def handle_payment_succeeded(
    message: PaymentSucceeded,
    envelope: Envelope,
    *,
    uow: UnitOfWorkFactory,
    faults: FaultPolicy,
    users: UserPolicy = UserPolicy(),
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
        outcome = await _credit(tx, message, f"payment-{envelope.event_id}", users)
    log.info("order %s: %s (event %s)", message.order_id, outcome, envelope.event_id)


async def handle_retry_credit(
    message: RetryCredit, envelope: Envelope, *, uow: UnitOfWorkFactory, users: UserPolicy = UserPolicy()
) -> None:
    """The reconciler found the order overdue: credit it now, or re-announce the credit it already has."""
    async with uow() as tx:
        if not await tx.mark_processed(COMMANDS_CONSUMER, envelope.event_id):
            return
        outcome = await _credit(tx, message, f"retry-{message.attempt}", users)
    log.warning("order %s: retry %d -> %s (event %s)", message.order_id, message.attempt, outcome, envelope.event_id)


async def handle_block_credit(message: BlockCredit, envelope: Envelope, *, uow: UnitOfWorkFactory) -> None:
    """Before a refund: make sure the order is never credited, or say that it already was."""
    async with uow() as tx:
        if not await tx.mark_processed(COMMANDS_CONSUMER, envelope.event_id):
            return
        await tx.lock_order(message.order_id)
        existing = await tx.credit_of(message.order_id)
        if existing is not None:
            _announce_credit(tx, message.order_id, existing, "reannounce-block")
            log.warning("order %s was credited already; block refused (event %s)", message.order_id, envelope.event_id)
            return
        await tx.block(message.order_id, message.reason)
        _reject(tx, message.order_id, message.user_id, f"blocked: {message.reason}", True, "block")
    log.warning("order %s blocked from crediting: %s (event %s)", message.order_id, message.reason, envelope.event_id)


async def handle_grant_compensation(message: GrantCompensation, envelope: Envelope, *, uow: UnitOfWorkFactory) -> None:
    """A late credit earns a delay compensation, once per order; an order never credited earns none."""
    async with uow() as tx:
        if not await tx.mark_processed(COMMANDS_CONSUMER, envelope.event_id):
            return
        await tx.lock_order(message.order_id)
        if await tx.credit_of(message.order_id) is None:
            log.warning("order %s has no credit: no compensation (event %s)", message.order_id, envelope.event_id)
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


async def handle_refund_succeeded(message: RefundSucceeded, envelope: Envelope, *, uow: UnitOfWorkFactory) -> None:
    """The order's payment went back to the user: it is never credited, and a late credit says why."""
    async with uow() as tx:
        if not await tx.mark_processed(PAYMENTS_CONSUMER, envelope.event_id):
            return
        await tx.lock_order(message.order_id)
        if await tx.credit_of(message.order_id) is not None:
            # The reconciler refunds only orders the ledger blocked; this needs a person.
            log.error("order %s was refunded although it is credited (event %s)", message.order_id, envelope.event_id)
            return
        await tx.block(message.order_id, domain.ORDER_REFUNDED, overwrite=True)
    log.info("order %s refunded: it will never be credited (event %s)", message.order_id, envelope.event_id)
