"""One provider down must not hold back the queries that find another provider's lost callbacks."""

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from payments.domain import CallbackAck, CloseAnswer, CloseStatus, Order, PaymentQuery, PaymentState, PaymentStatus
from payments.ports import PaymentProvider
from payments.queries import DueQuery, QueryDeps, QueryWorker
from payments.schedule import QueryPolicy
from tests.payments.providers.test_orders_closed_at_their_expiry import Counts, Schedule
from tests.payments.unit.fakes import FixedClock, InMemoryPayments, Store

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
POLICY = QueryPolicy({"alipay": "alipay", "wechat": "wechatpay"}, delay_s=30, expiry_s=1800)
TIMEOUT_S = 0.3
"""The provider timeout, scaled down: a provider that is down answers every query `unknown` after it."""


@dataclass
class Down:
    """A provider that does not answer: each query waits out the timeout and reads as unknown."""

    name: str = "wechatpay"
    asked: int = 0

    async def query_payment(self, order_id: str) -> PaymentQuery:
        self.asked += 1
        await asyncio.sleep(TIMEOUT_S)
        return PaymentQuery(PaymentState.UNKNOWN, order_id, self.name, reason="no answer from WeChat Pay: timed out")

    async def close(self, order_id: str) -> CloseAnswer:
        await asyncio.sleep(TIMEOUT_S)
        return CloseAnswer(CloseStatus.UNKNOWN, "timed out")

    def reply(self, ack: CallbackAck) -> object:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


@dataclass
class Up:
    """Alipay, up: it has the payment whose notification was lost."""

    name: str = "alipay"
    answered_at: dict[str, float] = field(default_factory=dict)

    async def query_payment(self, order_id: str) -> PaymentQuery:
        self.answered_at[order_id] = time.monotonic()
        return PaymentQuery(PaymentState.PAID, order_id, "alipay", "2026112222001", 600, "CNY", NOW)

    async def close(self, order_id: str) -> CloseAnswer:
        raise AssertionError("a paid order is not closed")

    def reply(self, ack: CallbackAck) -> object:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


@dataclass
class Registry:
    by_name: dict[str, object]

    def get(self, name: str) -> PaymentProvider | None:
        return self.by_name.get(name)  # type: ignore[return-value]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.by_name)


async def test_a_provider_that_is_down_does_not_hold_back_queries_of_another_provider() -> None:
    """The worker keeps at most `asking` queries in flight across all providers (the README's 56), though the
    limit stands for one provider's connection pool and each provider has its own. When WeChat Pay is down, every
    slot waits out a timeout on it, and its many pending orders (rescheduled every few minutes, for ever while it
    is down) are claimed ahead of Alipay's, so an Alipay order whose notification was lost is found paid only
    after rounds of WeChat Pay timeouts: with thousands of WeChat Pay orders pending, minutes past the
    reconciler's deadline, for every Alipay user, while Alipay answers at once."""
    wechat_orders = [f"ord_w{n:03d}" for n in range(40)]
    placed = NOW - timedelta(minutes=1)
    orders = {
        o: Order(o, "u1", 600, "CNY", "wechat", PaymentStatus.PENDING, "submitted", placed) for o in wechat_orders
    }
    orders["ord_alipay"] = Order("ord_alipay", "u2", 600, "CNY", "alipay", PaymentStatus.PENDING, "submitted", placed)
    store = Store(orders=orders)
    rows, due_at = {}, {}
    for n, o in enumerate(wechat_orders):
        rows[o] = DueQuery(o, "wechatpay", "wechat", NOW + timedelta(minutes=29), 1, PaymentStatus.PENDING, "submitted")
        due_at[o] = NOW - timedelta(seconds=60 - n)  # fell due a little earlier than the Alipay one
    rows["ord_alipay"] = DueQuery(
        "ord_alipay", "alipay", "alipay", NOW + timedelta(minutes=29), 1, PaymentStatus.PENDING, "submitted"
    )
    due_at["ord_alipay"] = NOW - timedelta(seconds=1)
    schedule = Schedule(rows, due_at)
    wechat, alipay = Down(), Up()
    deps = QueryDeps(
        schedule,
        Registry({"wechatpay": wechat, "alipay": alipay}),
        lambda: InMemoryPayments(store),
        FixedClock(NOW.timestamp()),
        POLICY,
        Counts(),
        lease_s=3 * 60.0,
    )
    worker = QueryWorker(deps, batch=5, idle_s=0.01, asking=4)
    started = time.monotonic()
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(3 * TIMEOUT_S)
        paid = store.orders["ord_alipay"].payment_status is PaymentStatus.SUCCEEDED
        assert paid, (
            f"Alipay's paid order still unpaid after {time.monotonic() - started:.1f} s (three WeChat Pay timeouts): "
            f"every one of the worker's {worker.asking} slots is waiting on WeChat Pay, which is down "
            f"({wechat.asked} queries sent to it so far)"
        )
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
