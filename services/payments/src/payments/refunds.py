"""Refunds: executes IssueRefund once per order through the provider, querying before any retry."""

import logging
from collections.abc import Awaitable
from datetime import UTC, datetime

from contracts.codec import Envelope, deterministic_id
from contracts.commands import IssueRefund
from contracts.events import RefundFailed, RefundSucceeded
from contracts.topics import Topic
from payments.domain import PaymentStatus
from payments.ports import PaymentsUnitOfWork, RefundAnswer, RefundProvider, UnitOfWorkFactory

log = logging.getLogger(__name__)

CONSUMER = "payments.commands"
MAX_ATTEMPTS = 3


async def _ask(call: Awaitable[RefundAnswer]) -> RefundAnswer:
    """The provider's answer; a request that timed out or lost its connection is an unknown outcome."""
    try:
        return await call
    except (TimeoutError, OSError) as exc:
        return RefundAnswer("unknown", reason=f"no answer: {exc!r}"[:200])


async def _execute(
    provider: RefundProvider, name: str, txn: str, amount: int, currency: str, key: str
) -> tuple[RefundAnswer, int]:
    """Request the refund; after an unknown outcome (a timeout), ask the provider what became of it before
    requesting it again, and once more before giving up, so a refund that happened is never reported failed."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        answer = await _ask(provider.refund(name, txn, amount, currency, key))
        if answer.status != "unknown":
            return answer, attempt
        answer = await _ask(provider.query(name, key))  # a timed-out refund may have happened: ask first
        if answer.status != "unknown":
            return answer, attempt
    return RefundAnswer("failed", reason=f"provider did not answer after {MAX_ATTEMPTS} attempts"), MAX_ATTEMPTS


def _announce(tx: PaymentsUnitOfWork, command: IssueRefund, answer: RefundAnswer) -> None:
    now = datetime.now(UTC)
    if answer.status == "succeeded":
        tx.publish(
            Topic.PAYMENTS_EVENTS,
            RefundSucceeded(
                order_id=command.order_id,
                user_id=command.user_id,
                amount=command.amount,
                currency=command.currency,
                refund_id=answer.refund_id or "unknown",
                refunded_at=now,
            ),
            event_id=deterministic_id("RefundSucceeded", command.order_id),
        )
    else:
        tx.publish(
            Topic.PAYMENTS_EVENTS,
            RefundFailed(
                order_id=command.order_id,
                user_id=command.user_id,
                reason=answer.reason[:200] or "failed",
                failed_at=now,
            ),
            event_id=deterministic_id("RefundFailed", command.order_id),
        )


async def handle_issue_refund(
    command: IssueRefund, envelope: Envelope, *, uow: UnitOfWorkFactory, provider: RefundProvider
) -> None:
    """Refund the order to its original payment method, once, and say how it went."""
    async with uow() as tx:
        if not await tx.mark_processed(CONSUMER, envelope.event_id):
            return
        order = await tx.get(command.order_id, for_update=True)
        done = await tx.refund_of(command.order_id)
        if done is not None:
            _announce(tx, command, done)  # repeat the outcome; the id makes it a no-op downstream
            return
        if order is None or order.payment_status is not PaymentStatus.SUCCEEDED or order.provider is None:
            answer = RefundAnswer("failed", reason="no paid order to refund")
            attempts = 0
        elif (command.amount, command.currency) != (order.amount, order.currency):
            answer = RefundAnswer("failed", reason="refund amount does not match the order")
            attempts = 0
        else:
            assert order.provider_txn_id is not None
            key = deterministic_id("refund", order.order_id)
            answer, attempts = await _execute(
                provider, order.provider, order.provider_txn_id, order.amount, order.currency, key
            )
        if order is not None:
            await tx.save_refund(order.order_id, answer, attempts)
        _announce(tx, command, answer)
    log.warning(
        "refund of order %s: %s %s (event %s)", command.order_id, answer.status, answer.reason, envelope.event_id
    )
