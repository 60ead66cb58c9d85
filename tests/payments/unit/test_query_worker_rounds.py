"""The query worker's rounds: a round it has claimed is asked, whatever happens after the claim."""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from payments.domain import Order, PaymentStatus
from payments.queries import DueQuery, QueryDeps, QueryWorker
from payments.schedule import QueryPolicy
from tests.kafka_reader import eventually
from tests.payments.providers.test_orders_closed_at_their_expiry import Counts, Schedule
from tests.payments.unit.fakes import FixedClock, InMemoryPayments, Store
from tests.payments.unit.test_query_worker_rooms_by_provider import Registry, Up

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
POLICY = QueryPolicy({"alipay": "alipay"}, delay_s=30, expiry_s=1800)


@dataclass
class Blip(Schedule):
    """The schedule, with the database gone for one statement: the one after the claim."""

    blips: int = 1

    async def next_due(self) -> datetime | None:
        if self.blips:
            self.blips -= 1
            raise ConnectionResetError("connection to the database lost")
        return await super().next_due()


async def test_a_claimed_round_is_asked_even_when_the_database_blinks_right_after_the_claim() -> None:
    """The worker claims a round (leasing its rows for three provider timeouts, 30 s) and then asks when the
    next query falls due; when that second statement fails, the except branch sleeps and loops, and the round
    it already claimed is dropped unasked. Its orders, whose callbacks are lost, are asked only when their
    lease runs out: a lost payment is credited 30 s later than it would be, past the reconciler's deadline in
    the demo and a quarter of the production one, and each such blip costs every order of the round an attempt
    and its backoff."""
    oid = "ord_alipay"
    placed = Order(oid, "u1", 600, "CNY", "alipay", PaymentStatus.PENDING, "submitted", NOW - timedelta(minutes=1))
    store = Store(orders={oid: placed})
    row = DueQuery(oid, "alipay", "alipay", NOW + timedelta(minutes=29), 0, PaymentStatus.PENDING, "submitted")
    schedule = Blip({oid: row}, {oid: NOW - timedelta(seconds=1)})
    alipay = Up()
    deps = QueryDeps(
        schedule, Registry({"alipay": alipay}), lambda: InMemoryPayments(store), FixedClock(NOW.timestamp()),
        POLICY, Counts(), lease_s=30.0,
    )  # fmt: skip
    running = asyncio.create_task(QueryWorker(deps, batch=50, idle_s=0.01).run())
    try:
        await eventually(lambda: schedule.blips == 0, timeout_s=5, interval_s=0.001)
        await asyncio.sleep(1.5)  # the worker's retry wait (idle_s) many times over; the clock stays before the lease
        assert store.orders[oid].payment_status is PaymentStatus.SUCCEEDED, (
            f"the round claimed just before the database blinked was never asked: its row is leased until "
            f"{schedule.due_at[oid].isoformat()} (now {NOW.isoformat()}), Alipay asked {len(alipay.answered_at)} times"
        )
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
