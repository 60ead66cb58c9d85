"""Refunds: executes IssueRefund once per order at the provider that took the money, querying before any retry.

A refund moves the platform's money back to a payment method, so it needs a payment behind it: payments refunds
only an order it knows as paid (its provider confirmed the payment), neither credited nor compensated (the
reconciler refunds only after the ledger's final block), not refunded yet, to the user who paid, in
the currency and for the amount paid (never above: the provider is asked for the order's amount). Anything else
is not a refund the reconciler would ask for (it refunds only orders it saw paid on the payments topic, with the
payment's amount): whoever sent it, it is refused for good (PermanentFailure: dead-lettered with its reason,
counted by it), and nothing is asked of the provider or recorded. A repeated command for a refunded order only
repeats the outcome.

The refund goes through the PaymentProvider registered under the order's provider, with a refund id derived from
the order (the provider's idempotency key: WeChat Pay's out_refund_no, Alipay's out_request_no), so asking again,
from any instance or after a restart, never refunds twice.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from contracts.codec import Envelope, deterministic_id
from contracts.commands import IssueRefund
from contracts.events import RefundFailed, RefundSucceeded
from contracts.topics import Topic
from payments.domain import Order, PaymentStatus, RefundRequest
from payments.ports import PaymentProvider, PaymentProviders, PaymentsUnitOfWork, RefundAnswer, UnitOfWorkFactory
from payments.support import SETTLED_CREDITED
from servicekit.rejections import PermanentFailure

log = logging.getLogger(__name__)

CONSUMER = "payments.commands"
MAX_ATTEMPTS = 3
PENDING_WAIT_S = 1.0
"""After a "pending" answer (accepted, not finished), the wait before the next query, times the attempt."""
FINAL = frozenset({"succeeded", "failed"})

Sleep = Callable[[float], Awaitable[None]]


async def _ask(call: Awaitable[RefundAnswer]) -> RefundAnswer:
    """The provider's answer; a request that timed out or lost its connection is an unknown outcome."""
    try:
        return await call
    except (TimeoutError, OSError) as exc:
        return RefundAnswer("unknown", reason=f"no answer: {exc!r}"[:200])


async def _execute(provider: PaymentProvider, request: RefundRequest, sleep: Sleep) -> tuple[RefundAnswer, int]:
    """Request the refund; after an unknown outcome (a timeout), ask the provider what became of it before
    requesting it again, and once more before giving up. A refund the provider accepted but has not finished
    ("pending") is only queried, never requested again. Only the provider's own answer is final: a refund that
    is still pending, or whose outcome is still unknown, after the last query is returned as it is, so a refund
    that happened is never reported failed (a failed refund lets support re-drive the credit: paid twice)."""
    answer = RefundAnswer("unknown")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if answer.status == "unknown":  # the provider knows of no refund: (re)request it, with the same id
            answer = await _ask(provider.refund(request))
        if answer.status in FINAL:
            return answer, attempt
        if answer.status == "pending":
            await sleep(PENDING_WAIT_S * attempt)
        answer = await _ask(provider.query_refund(request.order_id, request.refund_id))
        if answer.status in FINAL:
            return answer, attempt
    return answer, MAX_ATTEMPTS


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
    if order.status in SETTLED_CREDITED:  # the user has the money in the wallet: a refund would pay it twice
        return PermanentFailure(f"order is {order.status}: a refund would pay it twice", label="order_credited")
    if command.currency == order.currency and command.amount > order.amount:
        return PermanentFailure(
            f"refund of {command.amount} is above the {order.amount} paid", label="above_amount_paid"
        )
    asked, paid = (command.user_id, command.amount, command.currency), (order.user_id, order.amount, order.currency)
    if asked != paid:
        return PermanentFailure(f"refund {asked} does not match the payment {paid}", label="refund_mismatch")
    return None


def _request(command: IssueRefund, order: Order) -> RefundRequest:
    assert order.provider_txn_id is not None  # refusal() let only a paid order through
    refund_id = deterministic_id("refund", order.order_id)  # the provider's idempotency key: one per order
    return RefundRequest(
        order.order_id, refund_id, order.provider_txn_id, order.amount, order.amount, order.currency, command.reason
    )


async def handle_issue_refund(
    command: IssueRefund,
    envelope: Envelope,
    *,
    uow: UnitOfWorkFactory,
    providers: PaymentProviders,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Refund the order to its original payment method, at the provider that took the payment, once, and say how
    it went. A refund the provider still reports pending after the last query is neither recorded nor announced:
    it is dead-lettered (label refund_pending), and so is one whose outcome the provider never told (label
    refund_unknown): replaying it asks the provider again under the same id."""
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
        done = await tx.refund_of(command.order_id)
        if done is not None:
            _announce(tx, command, done)  # repeat the outcome; the id makes it a no-op downstream
            return
        provider = providers.get(order.provider)
        if provider is None:  # configuration, not the command, is wrong: replay it once the provider is back
            raise PermanentFailure(f"provider {order.provider!r} is not configured", label="provider_not_configured")
        request = _request(command, order)
        answer, attempts = await _execute(provider, request, sleep)
        if answer.status not in FINAL:
            raise PermanentFailure(
                f"refund {request.refund_id} is still {answer.status} at {order.provider} after {attempts} queries"
                f"{f' ({answer.reason})' if answer.reason else ''}: replay this command to ask again",
                label=f"refund_{answer.status}",
            )
        await tx.save_refund(order.order_id, answer, attempts)
        _announce(tx, command, answer)
    log.warning(
        "refund of order %s at %s: %s %s (event %s)",
        command.order_id,
        order.provider,
        answer.status,
        answer.reason,
        envelope.event_id,
    )
