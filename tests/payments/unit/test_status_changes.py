"""Payments follows each order's lifecycle status, newest sequence wins."""

from datetime import UTC, datetime

from contracts.codec import Envelope
from contracts.events import OrderStatus, OrderStatusChanged
from payments.handlers import handle_status_changes
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

    async def apply(*changes: tuple[OrderStatusChanged, Envelope]) -> list[OrderStatus]:
        return await handle_status_changes(changes, statuses=statuses)

    assert await apply((changed(OrderStatus.DELAYED, 2), envelope("e2"))) == [OrderStatus.DELAYED]
    assert await apply((changed(OrderStatus.PAID, 1), envelope("e1"))) == []
    assert await apply((changed(OrderStatus.DELAYED, 2), envelope("e2"))) == []
    assert await apply((changed(OrderStatus.PAID, 1, "ord_x"), envelope("e3"))) == []
    assert store.orders["ord_1"].status == "delayed"


async def test_a_poll_with_several_changes_of_one_order_applies_them_in_their_order() -> None:
    store = Store(orders={"ord_1": order(), "ord_2": order(order_id="ord_2")})
    statuses = InMemoryStatusBook(store)
    poll = [
        (changed(OrderStatus.DELAYED, 2), envelope("e1")),
        (changed(OrderStatus.REMEDIATING, 3), envelope("e2")),
        (changed(OrderStatus.DELAYED, 2, "ord_2"), envelope("e3")),
        (changed(OrderStatus.PAID, 1), envelope("e4")),
    ]

    applied = await handle_status_changes(poll, statuses=statuses)

    assert applied == [OrderStatus.DELAYED, OrderStatus.REMEDIATING, OrderStatus.DELAYED]
    assert (store.orders["ord_1"].status, store.orders["ord_2"].status) == ("remediating", "delayed")
