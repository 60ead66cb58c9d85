"""Two notifier instances on one schema queue notifications of the same order at the same time: an order's expiry
(payments.events) and its late credit (orders.status) are consumed apart, by whichever instance holds each topic's
partition, and a rebalance has two instances hold one partition's batch for a moment. Whichever commits first, one
target gets the order's statuses in order: never both handed over at once, the older one free to land last on the
device under the same push Topic."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from contracts.events import OrderExpired, OrderStatusChanged
from notifier import domain
from notifier.adapters.queue import Claimed
from notifier.bootstrap import Notifier, build
from notifier.handlers import expired_payload, payload
from tests.conftest import Broker
from tests.notifier.harness import notifier_settings
from tests.notifier.integration.late_credit import credited, expired, leasing_uow

ORDER = "ord_two_instances"


def expiry() -> OrderExpired:
    return expired(ORDER, "u-two")


def credit() -> OrderStatusChanged:
    return credited(ORDER, "u-two")


def rendered(which: str) -> tuple[domain.Notification, dict[str, Any]]:
    if which == "expiry":
        notification = domain.render_expired(expiry())
        return notification, expired_payload(notification, expiry())
    notification = domain.render(credit())
    return notification, payload(notification, credit())


@pytest.fixture
async def instances(broker: Broker, database_url: str, isolation: str) -> AsyncIterator[tuple[Notifier, Notifier]]:
    first = await build(notifier_settings(broker, database_url, isolation))
    second = await build(notifier_settings(broker, database_url, isolation))
    try:
        yield first, second
    finally:
        await second.close()
        await first.close()


@pytest.mark.parametrize(("held", "committed"), [("expiry", "credit"), ("credit", "expiry")])
async def test_an_expiry_and_a_credit_queued_at_once_by_two_instances_never_both_go_out_at_once(
    instances: tuple[Notifier, Notifier], held: str, committed: str
) -> None:
    first, second = instances
    leased: list[Claimed] = []

    async def queue_on_second() -> None:
        async with leasing_uow(second, leased) as tx:
            await tx.add_many([rendered(committed)])

    async with leasing_uow(first, leased) as tx:
        await tx.add_many([rendered(held)])
        other = asyncio.create_task(queue_on_second())
        await asyncio.sleep(0.5)  # the second instance's batch meets the first's, not committed yet
    await asyncio.wait_for(other, 10)

    handed_over = sorted(d.payload["status"] for d in leased)
    async with first.infra.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT n.status, n.state, d.attempts FROM notifications n"
            " LEFT JOIN deliveries d USING (notification_id) WHERE n.order_id = $1 ORDER BY n.sequence",
            ORDER,
        )
    states = [(r["status"], r["state"], r["attempts"]) for r in rows]
    assert len(handed_over) == 1, f"both statuses handed over at once: {handed_over}; rows {states}"
    if held == "expiry":  # the expiry was first: it goes out, the credit waits for it to settle
        assert states == [("expired", "pending", 1), ("credited", "pending", 0)]
    else:  # the credit was first: the expiry that came after it is never pushed
        assert states == [("expired", "superseded", None), ("credited", "pending", 1)]
