"""The payment event the service-kit tests publish: one order of user u1, 100 CNY by card."""

from datetime import UTC, datetime

from contracts.events import PaymentSucceeded


def paid(order_id: str) -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id=order_id,
        user_id="u1",
        amount=100,
        currency="CNY",
        channel="card",
        provider="sim",
        provider_txn_id=f"tx-{order_id}",
        paid_at=datetime.now(UTC),
    )
