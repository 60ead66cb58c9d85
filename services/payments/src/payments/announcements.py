"""What payments announces when a provider's notice (or a risk review) settles an order's payment."""

from datetime import datetime

from contracts.codec import deterministic_id
from contracts.events import OrderHeld, PaymentFailed, PaymentSucceeded
from contracts.topics import Topic
from payments.domain import Order, PaymentStatus
from payments.ports import PaymentsUnitOfWork


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
