"""What the reconciler's use cases need from the outside world."""

from typing import Protocol

from reconciler.domain import OrderState, StatusChange


class OrderStates(Protocol):
    """Per-order state, partitioned like the input topics (a faust table in production)."""

    def get(self, order_id: str) -> OrderState | None: ...

    def put(self, state: OrderState) -> None: ...


class StatusPublisher(Protocol):
    """Publishes an order's status changes to orders.status."""

    async def publish(self, state: OrderState, change: StatusChange) -> None: ...
