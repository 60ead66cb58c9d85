"""The payment facts the ledger's integration tests publish: an order of user-<order>, 600 CNY by card."""

from datetime import UTC, datetime

from contracts.events import PaymentSucceeded, RefundSucceeded

AMOUNT = 600


def payment(order_id: str) -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id=order_id,
        user_id=f"user-{order_id}",
        amount=AMOUNT,
        currency="CNY",
        channel="card",
        provider="sim",
        provider_txn_id=f"tx-{order_id}",
        paid_at=datetime.now(UTC),
    )


def refund(order_id: str) -> RefundSucceeded:
    return RefundSucceeded(
        order_id=order_id,
        user_id=f"user-{order_id}",
        amount=AMOUNT,
        currency="CNY",
        refund_id=f"rf-{order_id}",
        refunded_at=datetime.now(UTC),
    )
