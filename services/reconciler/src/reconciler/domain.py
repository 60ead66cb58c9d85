"""The per-order join of payments and credits, as a pure state machine: events in, state and effects out.

Rules:
- An order's user-facing status starts at `paid` (the provider already told the user) and the first
  status published is the next one: `credited` once both the payment and the credit are known.
- A credit that arrives before its payment is kept; `credited` is published when the payment arrives.
- Every event is applied idempotently: a repeat changes nothing and publishes nothing.
- A failed payment ends the order without a status change (nothing was owed).
"""

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from contracts.events import CreditPosted, OrderStatus, PaymentFailed, PaymentSucceeded


@dataclass(frozen=True, slots=True)
class OrderState:
    """What the reconciler knows about one order."""

    order_id: str
    user_id: str = ""
    amount: int = 0
    currency: str = ""
    channel: str = ""
    paid_at: datetime | None = None
    payment_failed: bool = False
    credited_at: datetime | None = None
    credit_transaction_id: str | None = None
    status: OrderStatus | None = None
    sequence: int = 0
    history: tuple[tuple[str, str], ...] = field(default=())

    @property
    def paid(self) -> bool:
        return self.paid_at is not None

    @property
    def credited(self) -> bool:
        return self.credited_at is not None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("paid_at", "credited_at"):
            data[key] = data[key].isoformat() if data[key] else None
        data["status"] = self.status.value if self.status else None
        data["history"] = [list(h) for h in self.history]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "OrderState":
        values = dict(data)
        for key in ("paid_at", "credited_at"):
            values[key] = datetime.fromisoformat(values[key]) if values.get(key) else None
        values["status"] = OrderStatus(values["status"]) if values.get("status") else None
        values["history"] = tuple(tuple(h) for h in values.get("history", ()))
        return cls(**values)


@dataclass(frozen=True, slots=True)
class StatusChange:
    """Publish OrderStatusChanged for the order."""

    status: OrderStatus
    previous: OrderStatus | None
    reason: str
    sequence: int


Effect = StatusChange


def _transition(state: OrderState, status: OrderStatus, reason: str) -> tuple[OrderState, list[Effect]]:
    sequence = state.sequence + 1
    effect = StatusChange(status=status, previous=state.status or OrderStatus.PAID, reason=reason, sequence=sequence)
    return replace(state, status=status, sequence=sequence), [effect]


def _settle(state: OrderState) -> tuple[OrderState, list[Effect]]:
    if state.paid and state.credited and state.status is not OrderStatus.CREDITED:
        return _transition(state, OrderStatus.CREDITED, "credit posted")
    return state, []


def on_payment_succeeded(state: OrderState | None, event: PaymentSucceeded) -> tuple[OrderState, list[Effect]]:
    """The provider confirmed the payment: the order is owed a credit."""
    current = state or OrderState(order_id=event.order_id)
    if current.paid:
        return current, []
    current = replace(
        current,
        user_id=event.user_id,
        amount=event.amount,
        currency=event.currency,
        channel=event.channel,
        paid_at=event.paid_at,
        payment_failed=False,
        history=(*current.history, ("paid", event.paid_at.isoformat())),
    )
    return _settle(current)


def on_payment_failed(state: OrderState | None, event: PaymentFailed) -> tuple[OrderState, list[Effect]]:
    """The payment failed: nothing is owed (unless a success already arrived, which wins)."""
    current = state or OrderState(order_id=event.order_id, user_id=event.user_id, channel=event.channel)
    if current.paid or current.payment_failed:
        return current, []
    return replace(
        current, payment_failed=True, history=(*current.history, ("payment_failed", event.failed_at.isoformat()))
    ), []


def on_credit_posted(state: OrderState | None, event: CreditPosted) -> tuple[OrderState, list[Effect]]:
    """The ledger credited the wallet."""
    current = state or OrderState(
        order_id=event.order_id, user_id=event.user_id, amount=event.amount, currency=event.currency
    )
    if current.credited:
        return current, []
    current = replace(
        current,
        credited_at=event.credited_at,
        credit_transaction_id=event.transaction_id,
        history=(*current.history, ("credited", event.credited_at.isoformat())),
    )
    return _settle(current)
