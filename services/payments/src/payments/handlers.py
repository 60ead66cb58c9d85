"""Payments use cases: place an order, apply a provider callback, follow the order's lifecycle status."""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from contracts.codec import Envelope, deterministic_id
from contracts.events import OrderHeld, OrderPlaced, OrderStatusChanged, PaymentFailed, PaymentSucceeded
from contracts.topics import Topic
from payments import domain
from payments.callbacks import CallbackBody
from payments.domain import Order, Outcome, PaymentNotice, PaymentStatus, ReviewRule
from payments.ports import Clock, PaymentsUnitOfWork, UnitOfWorkFactory
from servicekit.signatures import SignatureError, verify

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


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request body."""


class _KeyTaken(Exception):
    def __init__(self, fingerprint: str, order_id: str) -> None:
        self.fingerprint = fingerprint
        self.order_id = order_id


async def handle_place_order(cmd: PlaceOrder, *, uow: UnitOfWorkFactory, clock: Clock) -> tuple[Order, bool]:
    """Create the order (or return the one this Idempotency-Key made); True when it is new."""
    fingerprint = domain.fingerprint(cmd.user_id, cmd.amount, cmd.currency, cmd.channel, cmd.product)
    now = datetime.fromtimestamp(clock.now(), UTC)
    order = Order(
        order_id=domain.new_order_id(),
        user_id=cmd.user_id,
        amount=cmd.amount,
        currency=cmd.currency,
        channel=cmd.channel,
        payment_status=PaymentStatus.PENDING,
        status="submitted",
        created_at=now,
        product=cmd.product,
    )
    try:
        async with uow() as tx:
            await tx.add(order)
            if cmd.idempotency_key is not None:
                held_fp, held_id = await tx.claim_idempotency_key(cmd.idempotency_key, fingerprint, order.order_id)
                if held_id != order.order_id:
                    raise _KeyTaken(held_fp, held_id)
            tx.publish(
                Topic.PAYMENTS_EVENTS,
                OrderPlaced(
                    order_id=order.order_id,
                    user_id=order.user_id,
                    amount=order.amount,
                    currency=order.currency,
                    channel=order.channel,
                    product=order.product,
                    placed_at=now,
                ),
                event_id=deterministic_id("OrderPlaced", order.order_id),
            )
    except _KeyTaken as taken:
        if taken.fingerprint != fingerprint:
            raise IdempotencyConflict(
                f"Idempotency-Key {cmd.idempotency_key!r} was used for a different order request"
            ) from None
        async with uow() as tx:
            existing = await tx.get(taken.order_id)
        assert existing is not None
        return existing, False
    log.info("order %s placed for user %s: %d %s", order.order_id, order.user_id, order.amount, order.currency)
    return order, True


@dataclass(frozen=True, slots=True)
class CallbackResult:
    """The HTTP answer to a callback: status code, stable code and a sentence."""

    status_code: int
    code: str
    detail: str
    order_id: str | None = None
    outcome: Outcome = Outcome.REJECTED


_ANSWERS = {
    Outcome.PAID: (200, "applied"),
    Outcome.FAILED: (200, "applied"),
    Outcome.DUPLICATE: (200, "duplicate"),
    Outcome.IGNORED: (200, "ignored"),
}
_REJECTIONS = {"amount_mismatch": 422, "already_paid": 409}


async def handle_callback(
    provider: str,
    body: bytes,
    signature: str | None,
    *,
    secrets: dict[str, list[str]],
    uow: UnitOfWorkFactory,
    clock: Clock,
    review: ReviewRule | None = None,
) -> CallbackResult:
    """Verify, parse and apply one provider callback; every callback is kept for audit with its outcome.
    A payment that the review rule holds publishes OrderHeld instead of PaymentSucceeded."""
    result, notice = _check(provider, body, signature, secrets, clock)
    async with uow() as tx:
        if notice is None:
            assert result is not None
            await tx.record_callback(
                provider=provider,
                order_id=None,
                outcome="rejected",
                reason=f"{result.code}: {result.detail}",
                signature=signature,
                body=body,
            )
            return result
        order = await tx.get(notice.order_id, for_update=True)
        if order is None:
            result = CallbackResult(404, "unknown_order", f"no order {notice.order_id}", notice.order_id)
            await tx.record_callback(
                provider=provider,
                order_id=notice.order_id,
                outcome="rejected",
                reason="unknown_order",
                signature=signature,
                body=body,
            )
            return result
        decision = domain.decide(order, notice)
        await tx.record_callback(
            provider=provider,
            order_id=order.order_id,
            outcome=decision.outcome.value,
            reason=decision.code or decision.reason,
            signature=signature,
            body=body,
        )
        if decision.outcome is Outcome.REJECTED:
            log.warning("callback for order %s rejected: %s", order.order_id, decision.reason)
            return CallbackResult(_REJECTIONS[decision.code], decision.code, decision.reason, order.order_id)
        if decision.outcome in (Outcome.PAID, Outcome.FAILED):
            applied, now = decision.order, datetime.fromtimestamp(clock.now(), UTC)
            if review is not None and decision.outcome is Outcome.PAID:
                first = not await tx.has_cleared_topup(order.user_id, excluding=order.order_id)
                applied = review.hold(applied, first, now)
            await tx.save(applied)
            announce_payment(tx, applied, now)
            log.info("order %s %s via %s %s", order.order_id, decision.outcome, provider, notice.provider_txn_id)
    status, code = _ANSWERS[decision.outcome]
    return CallbackResult(status, code, decision.reason, order.order_id, decision.outcome)


def _check(
    provider: str, body: bytes, signature: str | None, secrets: dict[str, list[str]], clock: Clock
) -> tuple[CallbackResult | None, PaymentNotice | None]:
    active = secrets.get(provider)
    if not active:
        return CallbackResult(404, "unknown_provider", f"no payment provider named {provider!r}"), None
    try:
        verify(signature, body, active, clock.now())
    except SignatureError as exc:
        return CallbackResult(401, exc.code, exc.detail), None
    try:
        parsed = CallbackBody.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        return CallbackResult(422, "invalid_callback", problems[:500]), None
    return None, PaymentNotice(
        order_id=parsed.order_id,
        provider=provider,
        provider_txn_id=parsed.provider_txn_id,
        succeeded=parsed.status == "succeeded",
        amount=parsed.amount,
        currency=parsed.currency,
        paid_at=parsed.paid_at,
    )


def announce_payment(unit: PaymentsUnitOfWork, order: Order, now: datetime) -> None:
    """Publish what the provider said: PaymentSucceeded, OrderHeld while the order is under review, or
    PaymentFailed."""
    assert order.provider is not None
    assert order.provider_txn_id is not None
    if order.payment_status is PaymentStatus.SUCCEEDED and order.review_status == "held":
        assert order.paid_at is not None
        assert order.review_expected_at is not None
        unit.publish(
            Topic.PAYMENTS_EVENTS,
            OrderHeld(
                order_id=order.order_id,
                user_id=order.user_id,
                amount=order.amount,
                currency=order.currency,
                channel=order.channel,
                product=order.product,
                paid_at=order.paid_at,
                reason=order.review_reason or "risk review",
                held_at=now,
                expected_release_at=order.review_expected_at,
            ),
            event_id=deterministic_id("OrderHeld", order.order_id),
        )
    elif order.payment_status is PaymentStatus.SUCCEEDED:
        assert order.paid_at is not None
        unit.publish(
            Topic.PAYMENTS_EVENTS,
            PaymentSucceeded(
                order_id=order.order_id,
                user_id=order.user_id,
                amount=order.amount,
                currency=order.currency,
                channel=order.channel,
                product=order.product,
                provider=order.provider,
                provider_txn_id=order.provider_txn_id,
                paid_at=order.paid_at,
            ),
            event_id=deterministic_id("PaymentSucceeded", order.order_id),
        )
    else:
        unit.publish(
            Topic.PAYMENTS_EVENTS,
            PaymentFailed(
                order_id=order.order_id,
                user_id=order.user_id,
                channel=order.channel,
                provider=order.provider,
                provider_txn_id=order.provider_txn_id,
                failed_at=now,
            ),
            event_id=deterministic_id("PaymentFailed", order.order_id, order.provider_txn_id),
        )


async def handle_status_changed(message: OrderStatusChanged, envelope: Envelope, *, uow: UnitOfWorkFactory) -> bool:
    """Keep the order's lifecycle status current, ignoring changes older than what we have; True when applied."""
    async with uow() as tx:
        order = await tx.get(message.order_id, for_update=True)
        if order is None:
            log.warning(
                "status %s for unknown order %s (event %s)", message.status, message.order_id, envelope.event_id
            )
            return False
        updated = domain.apply_status(order, message.status.value, message.sequence)
        if updated is not None:
            await tx.save(updated)
    return updated is not None
