"""Two notifier instances on one schema queue notifications of the same order at the same time: an order's expiry
(payments.events) and its late credit (orders.status) are consumed apart, by whichever instance holds each topic's
partition, and a rebalance has two instances hold one partition's batch for a moment. Whichever commits first, one
target gets the order's statuses in order: never both handed over at once, the older one free to land last on the
device under the same push Topic."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts.events import OrderExpired, OrderStatus, OrderStatusChanged
from notifier import domain
from notifier.adapters.postgres import PostgresNotifications
from notifier.adapters.queue import Claimed
from notifier.bootstrap import Notifier, build
from notifier.handlers import expired_payload, payload
from tests.conftest import Broker
from tests.notifier.harness import notifier_settings

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
ORDER = "ord_two_instances"


def expiry() -> OrderExpired:
    return OrderExpired(
        order_id=ORDER,
        user_id="u-two",
        amount=600,
        currency="CNY",
        channel="alipay",
        provider="alipay",
        placed_at=T0,
        expired_at=T0 + timedelta(minutes=30),
    )


def credit() -> OrderStatusChanged:
    return OrderStatusChanged(
        order_id=ORDER,
        user_id="u-two",
        status=OrderStatus.CREDITED,
        sequence=1,
        amount=600,
        currency="CNY",
        channel="alipay",
        paid_at=T0 + timedelta(minutes=40),
        credited_at=T0 + timedelta(minutes=41),
        changed_at=T0 + timedelta(minutes=41),
    )


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


def uow(notifier: Notifier, leased: list[Claimed]) -> PostgresNotifications:
    """A unit of work of the instance's consumer, to the webhook, handing its leased deliveries over to `leased`."""
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


@pytest.mark.parametrize(("held", "committed"), [("expiry", "credit"), ("credit", "expiry")])
async def test_an_expiry_and_a_credit_queued_at_once_by_two_instances_never_both_go_out_at_once(
    instances: tuple[Notifier, Notifier], held: str, committed: str
) -> None:
    first, second = instances
    leased: list[Claimed] = []

    async def queue_on_second() -> None:
        async with uow(second, leased) as tx:
            await tx.add_many([rendered(committed)])

    async with uow(first, leased) as tx:
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
