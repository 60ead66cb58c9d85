"""A provider's answer to "close this unpaid order" decides that the order ends expired and leaves the query
schedule for good: it must be about our order, and "unknown to the provider" must not end an order the user can
still pay."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from credited.providers.keys import LocalKeys
from credited.providers.server import LocalProvider
from payments.domain import CloseStatus, Order, PaymentStatus
from payments.queries import DueQuery, QueryDeps, handle_due_queries
from payments.schedule import QueryPolicy
from tests.payments.providers.test_refund_answers_about_another_refund import Replaying, adapter, order
from tests.payments.unit.fakes import FixedClock, InMemoryPayments, Store


async def test_a_signed_close_answer_about_another_trade_does_not_close_our_order(
    provider: LocalProvider,
    local_keys: LocalKeys,
) -> None:
    """Alipay's close answer names the trade it closed (out_trade_no), yet the adapter believes any signed
    success, as it no longer does for refunds and queries. A replayed close answer about another trade makes
    payments expire an order still open at Alipay: the user is told nothing was charged, and the order leaves
    the query schedule, so when the user then pays and the notification is lost nobody ever asks and the money
    is never credited."""
    wire = Replaying()
    ours = adapter("alipay", local_keys, provider.url, wire)
    try:
        provider.open("alipay", order(1), 600)
        provider.open("alipay", order(2), 600)
        assert (await ours.close(order(1))).status is CloseStatus.CLOSED
        wire.replay = wire.recorded[-1]  # Alipay's signed answer closing order 1's trade

        answer = await ours.close(order(2))
        trade2 = provider.book.get("alipay", order(2))
        assert trade2 is not None and trade2.closed_at is None  # order 2's trade is still open at Alipay
        assert answer.status is not CloseStatus.CLOSED, (
            f"alipay.close believed a signed answer about order 1's trade for order 2: {answer}"
        )
    finally:
        await ours.aclose()


NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
POLICY = QueryPolicy({"alipay": "alipay"}, delay_s=30, expiry_s=1800, backoff=2, max_interval_s=300)


@dataclass
class Schedule:
    """payment_queries in memory: rows by order id with their due time; finish removes them."""

    rows: dict[str, DueQuery]
    due_at: dict[str, datetime]
    finished: list[str] = field(default_factory=list)

    async def claim(
        self, due_by: datetime, limit: int, lease_until: datetime, rooms: Mapping[str, int] | None = None
    ) -> list[DueQuery]:
        due = sorted(
            (q for o, q in self.rows.items() if self.due_at[o] <= due_by), key=lambda q: self.due_at[q.order_id]
        )
        room = dict(rooms) if rooms is not None else None
        taken = []
        for q in due:
            if len(taken) < limit and (room is None or room.get(q.provider, 0) > 0):
                taken.append(q)
                if room is not None:
                    room[q.provider] -= 1
        for q in taken:
            self.due_at[q.order_id] = lease_until
            self.rows[q.order_id] = DueQuery(
                q.order_id, q.provider, q.channel, q.expires_at, q.attempts + 1, q.payment_status, q.status
            )
        return [self.rows[q.order_id] for q in taken]

    async def reschedule(self, order_id: str, due_at: datetime, answer: str) -> None:
        self.due_at[order_id] = due_at

    async def finish(self, order_ids: Sequence[str]) -> None:
        for o in order_ids:
            self.rows.pop(o, None)
            self.finished.append(o)

    async def next_due(self) -> datetime | None:
        return min(self.due_at[o] for o in self.rows) if self.rows else None


class Counts:
    def answered(self, provider: str, state: object) -> None: ...
    def recovered(self, provider: str, channel: str) -> None: ...
    def expired(self, provider: str, channel: str) -> None: ...
    def clamped(self, provider: str) -> None: ...
    def waiting(self, seconds: float) -> None: ...


async def test_an_order_unknown_to_alipay_at_its_expiry_is_still_found_paid_when_the_user_pays_it_after(
    provider: LocalProvider,
    local_keys: LocalKeys,
) -> None:
    """At the order's expiry the user had not opened Alipay's cashier yet, so Alipay has no trade: the query
    answers TRADE_NOT_EXIST and so does the close, which therefore closes nothing. payments ends the order
    `expired` (the user is told nothing was charged) and deletes its query row. The cashier still takes the
    payment afterwards (Alipay creates the trade when the user starts paying, as the local provider does); when
    that notification is lost, no query ever comes and the money is taken and never credited, and nobody is
    told."""
    oid = order(7)
    placed = Order(oid, "u1", 600, "CNY", "alipay", PaymentStatus.PENDING, "submitted", NOW - timedelta(minutes=30))
    store = Store(orders={oid: placed})
    expires_at = placed.created_at + POLICY.expiry("alipay")
    schedule = Schedule(
        {oid: DueQuery(oid, "alipay", "alipay", expires_at, 5, PaymentStatus.PENDING, "submitted")}, {oid: expires_at}
    )
    clock = FixedClock(NOW.timestamp())
    wire = Replaying()
    ali = adapter("alipay", local_keys, provider.url, wire)

    @dataclass
    class One:
        def get(self, name: str) -> object:
            return ali if name == "alipay" else None

        @property
        def names(self) -> frozenset[str]:
            return frozenset({"alipay"})

    deps = QueryDeps(schedule, One(), lambda: InMemoryPayments(store), clock, POLICY, Counts())  # type: ignore[arg-type]
    try:
        assert await handle_due_queries(deps, 10) == 1  # the query at the expiry: no such trade at Alipay
        assert store.orders[oid].status == "expired"

        provider.pay("alipay", oid, 600)  # the user pays at the cashier a minute later; the notification is lost
        trade = provider.book.get("alipay", oid)
        assert trade is not None and trade.paid_at is not None

        for minutes in range(1, 121):  # two hours of the query worker
            clock.value = (NOW + timedelta(minutes=minutes)).timestamp()
            await handle_due_queries(deps, 10)
        assert store.orders[oid].payment_status is PaymentStatus.SUCCEEDED, (
            f"order {oid} was paid at Alipay ({trade.txn_id}) after it expired as unknown there, and payments "
            f"never asked again (its query row was finished: {schedule.finished}); it stays "
            f"{store.orders[oid].status!r}, uncredited"
        )
    finally:
        await ali.aclose()
