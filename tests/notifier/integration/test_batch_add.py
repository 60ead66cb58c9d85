"""One consumed batch of notifications on the real PostgreSQL: which deliveries go out at once, and how the batch's
orders are announced to the status pages (PostgresNotifications.add_many, PostgresOrderFeed)."""

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from contracts.events import OrderStatus, OrderStatusChanged
from notifier import domain
from notifier.adapters.feed import PostgresOrderFeed
from notifier.adapters.postgres import NOTIFIED_PER_MESSAGE, notify_channel
from notifier.adapters.queue import Claimed
from notifier.bootstrap import Notifier, build
from notifier.handlers import payload
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.harness import notifier_settings
from tests.notifier.integration.late_credit import leasing_uow

T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
STATUSES = [OrderStatus.PAID, OrderStatus.DELAYED, OrderStatus.CREDITED]


def change(order_id: str, sequence: int) -> OrderStatusChanged:
    return OrderStatusChanged(
        order_id=order_id,
        user_id=f"u-{order_id}",
        status=STATUSES[sequence - 1],
        sequence=sequence,
        previous_status=STATUSES[sequence - 2] if sequence > 1 else None,
        amount=600,
        currency="CNY",
        channel="alipay",
        paid_at=T0,
        credited_at=T0 if STATUSES[sequence - 1] is OrderStatus.CREDITED else None,
        changed_at=T0,
    )


@pytest.fixture
async def notifier(broker: Broker, database_url: str, isolation: str) -> AsyncIterator[Notifier]:
    built = await build(notifier_settings(broker, database_url, isolation))
    try:
        yield built
    finally:
        await built.close()


async def add(notifier: Notifier, changes: list[OrderStatusChanged], leased: list[Claimed]) -> None:
    """The batch in one unit of work, as the consumer's handler adds it, to the webhook, handing over to `leased`."""
    rendered = [domain.render(c) for c in changes]
    async with leasing_uow(notifier, leased) as tx:
        await tx.add_many([(n, payload(n, c)) for n, c in zip(rendered, changes, strict=True)])


async def test_in_one_batch_only_each_orders_earliest_status_goes_out_at_once_and_the_later_ones_wait_for_it(
    notifier: Notifier,
) -> None:
    batch = [change("ord_a", s) for s in (1, 2, 3)] + [change("ord_b", 2), change("ord_c", 1), change("ord_c", 3)]
    random.Random(7).shuffle(batch)
    leased: list[Claimed] = []
    await add(notifier, batch, leased)

    assert sorted((d.order_id, d.payload["sequence"]) for d in leased) == [("ord_a", 1), ("ord_b", 2), ("ord_c", 1)]
    async with notifier.infra.pool.acquire() as conn:
        rows = await conn.fetch("SELECT order_id, sequence, attempts FROM deliveries ORDER BY order_id, sequence")
    waiting = [(r["order_id"], r["sequence"]) for r in rows if r["attempts"] == 0]
    assert waiting == [("ord_a", 2), ("ord_a", 3), ("ord_c", 3)]  # claimed once the earlier status is settled


async def test_a_batch_of_250_orders_wakes_every_orders_page_with_three_notifies_of_at_most_100_ids(
    notifier: Notifier, database_url: str
) -> None:
    orders = [f"ord_{i:03d}_{'x' * 50}" for i in range(250)]  # long ids: a NOTIFY's payload stays under 8,000 bytes
    settings = notifier.infra.settings
    heard: list[str] = []
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(notify_channel(settings.db_schema), lambda *args: heard.append(args[3]))
    feed = PostgresOrderFeed(database_url, settings.db_schema)
    running = asyncio.create_task(feed.run())
    try:
        await asyncio.wait_for(feed.listening.wait(), 30)
        with contextlib.ExitStack() as watching:
            woken = [watching.enter_context(feed.watch(o)) for o in orders]
            await add(notifier, [change(o, 1) for o in orders], [])
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in woken)), 10)
        await eventually(lambda: len(heard) >= 3, timeout_s=10, interval_s=0.05)  # the raw listener's too
        await asyncio.sleep(0.2)  # and no fourth after them
    finally:
        running.cancel()
        await listener.close()

    assert len(heard) == 3
    assert all(len(p.encode()) < 8000 and len(p.split(",")) <= NOTIFIED_PER_MESSAGE for p in heard)
    assert sorted(o for p in heard for o in p.split(",")) == sorted(orders)
