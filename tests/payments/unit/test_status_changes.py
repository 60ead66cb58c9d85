"""Payments follows each order's lifecycle status, newest sequence wins."""

from datetime import UTC, datetime

from contracts.codec import Envelope
from contracts.events import OrderStatus, OrderStatusChanged
from payments.handlers import handle_status_changed
from tests.payments.unit.fakes import InMemoryStatusBook, Store
from tests.payments.unit.test_callbacks import order


def changed(status: OrderStatus, sequence: int, order_id: str = "ord_1") -> OrderStatusChanged:
    now = datetime.now(UTC)
    return OrderStatusChanged(
        order_id=order_id,
        user_id="u1",
        status=status,
        sequence=sequence,
        amount=600,
        currency="CNY",
        channel="alipay",
        paid_at=now,
        changed_at=now,
    )


def envelope(event_id: str) -> Envelope:
    now = datetime.now(UTC)
    return Envelope("OrderStatusChanged", 1, event_id, event_id, now, "reconciler")


async def test_a_newer_status_is_applied_and_reported_so_an_older_or_unknown_one_is_not() -> None:
    store = Store(orders={"ord_1": order()})
    statuses = InMemoryStatusBook(store)

    assert await handle_status_changed(changed(OrderStatus.DELAYED, 2), envelope("e2"), statuses=statuses) is True
    assert await handle_status_changed(changed(OrderStatus.PAID, 1), envelope("e1"), statuses=statuses) is False
    assert await handle_status_changed(changed(OrderStatus.DELAYED, 2), envelope("e2"), statuses=statuses) is False
    assert (
        await handle_status_changed(changed(OrderStatus.PAID, 1, "ord_x"), envelope("e3"), statuses=statuses) is False
    )
    assert store.orders["ord_1"].status == "delayed"
