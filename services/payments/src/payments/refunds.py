"""Refunds: executes IssueRefund once per order through the provider, querying before any retry.

A refund moves the platform's money back to a payment method, so it needs a payment behind it: payments refunds
only an order it knows as paid (its provider confirmed the payment), not refunded yet, to the user who paid, in
the currency and for the amount paid (never above: the provider is asked for the order's amount). Anything else
is not a refund the reconciler would ask for (it refunds only orders it saw paid on the payments topic, with the
payment's amount): whoever sent it, it is refused for good (PermanentFailure: dead-lettered with its reason,
counted by it), and nothing is asked of the provider or recorded. A repeated command for a refunded order only
repeats the outcome.
"""

import logging
from collections.abc import Awaitable
from datetime import UTC, datetime

from contracts.codec import Envelope, deterministic_id
from contracts.commands import IssueRefund
from contracts.events import RefundFailed, RefundSucceeded
from contracts.topics import Topic
from payments.domain import Order, PaymentStatus
from payments.ports import PaymentsUnitOfWork, RefundAnswer, RefundProvider, UnitOfWorkFactory
from servicekit.rejections import PermanentFailure

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


def refusal(command: IssueRefund, order: Order | None) -> PermanentFailure | None:
    """Why `command` asks for a refund no payment of `order` stands behind, if it does."""
    if order is None:
        return PermanentFailure("no such order", label="unknown_order")
    if order.payment_status is not PaymentStatus.SUCCEEDED or order.provider is None or order.provider_txn_id is None:
        return PermanentFailure(f"order is not paid (payment {order.payment_status.value})", label="order_not_paid")
    if command.currency == order.currency and command.amount > order.amount:
        return PermanentFailure(
            f"refund of {command.amount} is above the {order.amount} paid", label="above_amount_paid"
        )
    asked, paid = (command.user_id, command.amount, command.currency), (order.user_id, order.amount, order.currency)
    if asked != paid:
        return PermanentFailure(f"refund {asked} does not match the payment {paid}", label="refund_mismatch")
    return None


async def handle_issue_refund(
    command: IssueRefund, envelope: Envelope, *, uow: UnitOfWorkFactory, provider: RefundProvider
) -> None:
    """Refund the order to its original payment method, once, and say how it went."""
    async with uow() as tx:
        if not await tx.mark_processed(CONSUMER, envelope.event_id):
            return
        order = await tx.get(command.order_id, for_update=True)
        refused = refusal(command, order)
        if refused is not None:
            log.warning("refund of order %s refused: %s (event %s)", command.order_id, refused, envelope.event_id)
            raise refused  # rolls the unit of work back: the command is not even marked processed
        assert order is not None
        assert order.provider is not None
        assert order.provider_txn_id is not None
        done = await tx.refund_of(command.order_id)
        if done is not None:
            _announce(tx, command, done)  # repeat the outcome; the id makes it a no-op downstream
            return
        key = deterministic_id("refund", order.order_id)
        answer, attempts = await _execute(
            provider, order.provider, order.provider_txn_id, order.amount, order.currency, key
        )
        await tx.save_refund(order.order_id, answer, attempts)
        _announce(tx, command, answer)
    log.warning(
        "refund of order %s: %s %s (event %s)", command.order_id, answer.status, answer.reason, envelope.event_id
    )
