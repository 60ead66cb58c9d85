"""InMemoryOrderStates: order states in a dict, stored as JSON like the faust table does."""

from collections.abc import Iterator
from typing import Any

from reconciler.domain import OrderState


class InMemoryOrderStates:
    def __init__(self, data: dict[str, dict[str, Any]] | None = None) -> None:
        self.data = data if data is not None else {}

    def get(self, order_id: str) -> OrderState | None:
        raw = self.data.get(order_id)
        return None if raw is None else OrderState.from_json(raw)

    def put(self, state: OrderState) -> None:
        self.data[state.order_id] = state.to_json()

    def values(self) -> Iterator[OrderState]:
        for raw in list(self.data.values()):
            yield OrderState.from_json(raw)
