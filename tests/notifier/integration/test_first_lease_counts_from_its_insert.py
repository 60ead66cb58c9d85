"""The notifier's first delivery lease: written with PostgreSQL's now() (the poll transaction's start) and timed by
the worker from its own monotonic clock at the commit. Real PostgreSQL."""

import asyncio
import time
from datetime import UTC, datetime

from contracts.events import OrderStatus, OrderStatusChanged
from notifier import domain
from notifier.adapters.postgres import PostgresNotifications
from notifier.adapters.queue import Claimed, PostgresDeliveryQueue
from notifier.bootstrap import Notifier
from notifier.handlers import payload
from tests.notifier.integration.test_batch_add import notifier  # noqa: F401 - the fixture

T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
LEASE_S = 4.0
REST_OF_POLL_S = 2.5  # the poll's transaction goes on after the insert (more messages, one at a time, a slow DB)


async def test_a_delivery_handed_over_at_commit_is_not_claimable_by_another_instance_before_its_worker_extends_it(
    notifier: Notifier,  # noqa: F811
) -> None:
    """The worker (DeliveryWorker.hand_over) stamps a handed-over delivery's lease start with time.monotonic() at the
    commit and extends it half a lease later; the row's lease end was written as now() + lease, and PostgreSQL's now()
    is the poll transaction's start. A poll transaction longer than half a lease (a poll handled one message at a time,
    a slow database) leaves the row due while its worker still sends it: another notifier instance claims it and
    the user gets the same notification twice (and the first worker's extension then fails as 'lost')."""
    settings = notifier.infra.settings
    handed: list[tuple[float, Claimed]] = []

    def on_leased(deliveries: list[Claimed], leased_at: float) -> None:  # as DeliveryWorker.hand_over stamps them
        handed.extend((leased_at, d) for d in deliveries)

    uow = PostgresNotifications(
        notifier.infra.pool,
        producer="notifier",
        topic_prefix=settings.topic_prefix,
        schema=settings.db_schema,
        webhook=True,
        lease_s=LEASE_S,
        on_commit=lambda: None,
        on_leased=on_leased,
    )
    change = OrderStatusChanged(
        order_id="ord_lease",
        user_id="u-lease",
        status=OrderStatus.CREDITED,
        sequence=1,
        previous_status=None,
        amount=600,
        currency="CNY",
        channel="alipay",
        paid_at=T0,
        credited_at=T0,
        changed_at=T0,
    )
    async with uow as tx:
        await tx.add_many([(domain.render(change), payload(domain.render(change), change))])
        await asyncio.sleep(REST_OF_POLL_S)
    assert len(handed) == 1, handed
    handed_at, _ = handed[0]

    # Before the worker's first extension (handed_at + lease/2), another instance looks for due deliveries.
    await asyncio.sleep(max(0.0, handed_at + LEASE_S / 2 - 0.3 - time.monotonic()))
    other = await PostgresDeliveryQueue(notifier.infra.pool).claim(10, LEASE_S)
    elapsed = time.monotonic() - handed_at
    assert other == [], (
        f"another instance claimed {[(c.notification_id, c.attempts) for c in other]} {elapsed:.2f}s after the"
        f" commit handed it to this worker, which extends only at {LEASE_S / 2:.1f}s: the lease was counted from the"
        f" transaction's start ({REST_OF_POLL_S}s earlier), so the delivery goes out twice"
    )
