"""An order that expired unpaid and was then credited (a late payment): its two messages, which two consumers (or
two notifier instances) can queue at once, and a unit of work of a notifier's consumer that hands its leased
deliveries to the test."""

from datetime import UTC, datetime, timedelta

from contracts.events import OrderExpired, OrderStatus, OrderStatusChanged
from notifier.adapters.postgres import PostgresNotifications
from notifier.adapters.queue import Claimed
from notifier.bootstrap import Notifier

PLACED = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def expired(order_id: str, user_id: str) -> OrderExpired:
    """Its expiry, 30 minutes after it was placed."""
    return OrderExpired(
        order_id=order_id,
        user_id=user_id,
        amount=600,
        currency="CNY",
        channel="alipay",
        provider="alipay",
        placed_at=PLACED,
        expired_at=PLACED + timedelta(minutes=30),
    )


def credited(order_id: str, user_id: str) -> OrderStatusChanged:
    """Its credit, after a payment found 40 minutes after it was placed."""
    return OrderStatusChanged(
        order_id=order_id,
        user_id=user_id,
        status=OrderStatus.CREDITED,
        sequence=1,
        amount=600,
        currency="CNY",
        channel="alipay",
        paid_at=PLACED + timedelta(minutes=40),
        credited_at=PLACED + timedelta(minutes=41),
        changed_at=PLACED + timedelta(minutes=41),
    )


def leasing_uow(notifier: Notifier, leased: list[Claimed]) -> PostgresNotifications:
    """A unit of work of the notifier's consumers, to the webhook, handing its leased deliveries over to `leased`."""
    settings = notifier.infra.settings
    return PostgresNotifications(
        notifier.infra.pool,
        producer="notifier",
        topic_prefix=settings.topic_prefix,
        schema=settings.db_schema,
        webhook=True,
        lease_s=30.0,
        on_commit=lambda: None,
        on_leased=lambda claimed, _: leased.extend(claimed),
    )
