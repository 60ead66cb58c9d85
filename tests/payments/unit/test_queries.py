"""The query use case with fakes: what each provider answer does to the order and to its schedule."""

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from contracts.events import OrderExpired, PaymentSucceeded
from payments.domain import (
    CallbackAck,
    CloseAnswer,
    CloseStatus,
    Order,
    PaymentQuery,
    PaymentState,
    PaymentStatus,
    ProviderReply,
    RefundAnswer,
    RefundRequest,
    VerifiedCallback,
)
from payments.ports import PaymentProvider
from payments.queries import DueQuery, QueryDeps, QueryWorker, handle_due_queries, seconds_until_due
from payments.schedule import QueryPolicy
from tests.kafka_reader import eventually
from tests.payments.unit.fakes import FixedClock, InMemoryPayments, Store

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
POLICY = QueryPolicy({"alipay": "alipay"}, delay_s=30, expiry_s=1800, backoff=2, max_interval_s=300)


@dataclass
class FakeProvider:
    """Answers queries and closes as scripted; raises when told to (a bug, a dropped connection)."""

    answer: PaymentState = PaymentState.PENDING
    close_answer: CloseStatus = CloseStatus.CLOSED
    error: Exception | None = None
    closed: list[str] = field(default_factory=list)
    closes_trade: bool = True
    pays_at_close: bool = False
    """The user pays as the order is closed: its query reads paid from the close on."""
    """A close answered CLOSED closes the trade (its query then reads CLOSED); False: an answer about another."""

    @property
    def name(self) -> str:
        return "alipay"

    async def query_payment(self, order_id: str) -> PaymentQuery:
        if self.error is not None:
            raise self.error
        if self.answer is PaymentState.PAID or (self.pays_at_close and order_id in self.closed):
            return PaymentQuery(PaymentState.PAID, order_id, "alipay", "2026112222001", 600, "CNY", NOW)
        if order_id in self.closed and self.close_answer is CloseStatus.CLOSED and self.closes_trade:
            return PaymentQuery(PaymentState.CLOSED, order_id, "alipay")
        return PaymentQuery(self.answer, order_id, "alipay")

    async def close(self, order_id: str) -> CloseAnswer:
        self.closed.append(order_id)
        return CloseAnswer(self.close_answer)

    async def verify_callback(self, body: bytes, headers: Mapping[str, str]) -> VerifiedCallback:
        raise NotImplementedError

    def reply(self, ack: CallbackAck) -> ProviderReply:
        raise NotImplementedError

    async def refund(self, request: RefundRequest) -> RefundAnswer:
        raise NotImplementedError

    async def query_refund(self, order_id: str, refund_id: str) -> RefundAnswer:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


@dataclass
class Providers:
    alipay: FakeProvider

    def get(self, name: str) -> PaymentProvider | None:
        return self.alipay if name == "alipay" else None

    @property
    def names(self) -> frozenset[str]:
        return frozenset({"alipay"})


@dataclass
class FakeSchedule:
    due: list[DueQuery]
    rescheduled: dict[str, tuple[datetime, str]] = field(default_factory=dict)
    finished: list[list[str]] = field(default_factory=list)
    due_by: list[datetime] = field(default_factory=list)
    later_s: list[float] = field(default_factory=list)

    async def claim(
        self, due_by: datetime, limit: int, lease_until: datetime, rooms: Mapping[str, int] | None = None
    ) -> list[DueQuery]:
        self.due_by.append(due_by)
        room = dict(rooms) if rooms is not None else None
        taken: list[DueQuery] = []
        for query in self.due:
            if len(taken) < limit and (room is None or room.get(query.provider, 0) > 0):
                taken.append(query)
                if room is not None:
                    room[query.provider] -= 1
        self.due = [q for q in self.due if q not in taken]
        return taken

    async def reschedule(self, order_id: str, due_at: datetime, answer: str) -> None:
        self.rescheduled[order_id] = (due_at, answer)

    async def finish(self, order_ids: Sequence[str]) -> None:
        self.finished.append(list(order_ids))

    async def next_due(self) -> datetime | None:
        return min((NOW + timedelta(seconds=s) for s in self.later_s), default=None)


@dataclass
class Counts:
    recoveries: int = 0
    expiries: int = 0
    clamps: int = 0
    answers: list[PaymentState] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    def answered(self, provider: str, state: PaymentState) -> None:
        self.answers.append(state)

    def recovered(self, provider: str, channel: str) -> None:
        self.recoveries += 1

    def expired(self, provider: str, channel: str) -> None:
        self.expiries += 1

    def clamped(self, provider: str) -> None:
        self.clamps += 1

    def waiting(self, seconds: float) -> None:
        self.waits.append(seconds)


@dataclass
class World:
    store: Store
    schedule: FakeSchedule
    provider: FakeProvider
    counts: Counts
    deps: QueryDeps


def order(order_id: str = "ord_1", **changes: object) -> Order:
    placed = Order(order_id, "u1", 600, "CNY", "alipay", PaymentStatus.PENDING, "submitted", NOW - timedelta(minutes=5))
    return replace(placed, **changes)  # type: ignore[arg-type]


def due(o: Order, *, expired: bool = False, attempts: int = 1) -> DueQuery:
    expires_at = NOW - timedelta(seconds=1) if expired else NOW + timedelta(minutes=25)
    return DueQuery(o.order_id, "alipay", o.channel, expires_at, attempts, o.payment_status, o.status)


@dataclass
class Lag:
    late_s: float

    def seconds(self, now: float) -> float:
        return self.late_s


def world(orders: list[Order], queries: list[DueQuery], provider: FakeProvider, *, late_s: float = 0.0) -> World:
    store = Store(orders={o.order_id: o for o in orders})
    schedule, counts = FakeSchedule(queries), Counts()
    clock = FixedClock(NOW.timestamp())
    deps = QueryDeps(
        schedule, Providers(provider), lambda: InMemoryPayments(store), clock, POLICY, counts, lag=Lag(late_s)
    )
    return World(store, schedule, provider, counts, deps)


async def test_a_paid_answer_pays_the_order_once_and_ends_its_queries() -> None:
    w = world([order()], [due(order())], FakeProvider(PaymentState.PAID))
    assert await handle_due_queries(w.deps, 10) == 1
    paid = w.store.orders["ord_1"]
    assert (paid.payment_status, paid.provider_txn_id) == (PaymentStatus.SUCCEEDED, "2026112222001")
    assert [type(m) for _, m, _ in w.store.published] == [PaymentSucceeded]
    assert [c["outcome"] for c in w.store.callbacks] == ["paid"]
    assert w.schedule.finished == [["ord_1"]] and w.counts.recoveries == 1


async def test_a_rounds_paid_answers_are_applied_in_one_transaction_and_leave_the_schedule_together() -> None:
    orders = [order(f"ord_{n}") for n in range(3)]
    w = world(orders, [due(o) for o in orders], FakeProvider(PaymentState.PAID))
    units: list[InMemoryPayments] = []

    def uow() -> InMemoryPayments:
        units.append(InMemoryPayments(w.store))
        return units[-1]

    assert await handle_due_queries(replace(w.deps, uow=uow), 10) == 3
    assert len(units) == 1 and w.counts.recoveries == 3
    assert {o.payment_status for o in w.store.orders.values()} == {PaymentStatus.SUCCEEDED}
    assert w.schedule.finished == [["ord_0", "ord_1", "ord_2"]]


async def test_paid_answers_whose_transaction_fails_stay_leased_for_later() -> None:
    orders = [order(f"ord_{n}") for n in range(2)]
    w = world(orders, [due(o) for o in orders], FakeProvider(PaymentState.PAID))

    def uow() -> InMemoryPayments:
        raise ConnectionResetError("database gone")

    assert await handle_due_queries(replace(w.deps, uow=uow), 10) == 2
    assert w.schedule.finished == [] and w.schedule.rescheduled == {} and w.counts.recoveries == 0
    assert {o.payment_status for o in w.store.orders.values()} == {PaymentStatus.PENDING}


@pytest.mark.parametrize(
    ("late_s", "waited_s"),
    [(0.0, 0.0), (4.5, 4.5), (600.0, POLICY.delay_s)],
    ids=["on time", "late", "later than a query delay"],
)
async def test_the_worker_takes_queries_only_once_due_by_the_callbacks_lateness_and_at_most_one_delay_more(
    late_s: float, waited_s: float
) -> None:
    w = world([order()], [due(order())], FakeProvider(PaymentState.PAID), late_s=late_s)
    await handle_due_queries(w.deps, 10)
    assert w.schedule.due_by == [NOW - timedelta(seconds=waited_s)] and w.counts.waits == [waited_s]


@pytest.mark.parametrize(
    ("later_s", "late_s", "sleep_s"),
    [
        ([0.3, 0.7], 0.0, 0.3),
        ([0.3], 0.4, 0.7),
        ([], 0.0, 1.0),
        ([5.0], 0.0, 1.0),
        ([-2.0], 0.0, 0.1),
        ([0.02], 0.0, 0.1),
    ],
    ids=["next due soon", "and its lateness waited out", "none scheduled", "far off", "overdue", "all but due"],
)
async def test_a_worker_with_nothing_due_sleeps_until_the_next_query_falls_due_within_its_bounds(
    later_s: list[float], late_s: float, sleep_s: float
) -> None:
    w = world([], [], FakeProvider(PaymentState.PAID), late_s=late_s)
    w.schedule.later_s = later_s
    assert await seconds_until_due(w.deps, least_s=0.1, most_s=1.0) == pytest.approx(sleep_s)


async def test_orders_settled_by_their_callback_leave_the_schedule_together_without_asking() -> None:
    settled = [order(f"ord_{n}", payment_status=PaymentStatus.SUCCEEDED, status="paid") for n in range(3)]
    w = world(settled, [due(o) for o in settled], FakeProvider(error=AssertionError("asked")))
    assert await handle_due_queries(w.deps, 10) == 3
    assert w.schedule.finished == [["ord_0", "ord_1", "ord_2"]] and w.counts.answers == []


@pytest.mark.parametrize("state", [PaymentState.PENDING, PaymentState.NOT_FOUND, PaymentState.FAILED])
async def test_an_unpaid_answer_before_the_expiry_asks_again_with_backoff(state: PaymentState) -> None:
    w = world([order()], [due(order(), attempts=3)], FakeProvider(state))
    await handle_due_queries(w.deps, 10)
    assert w.schedule.rescheduled["ord_1"][0] == NOW + POLICY.interval(3)
    assert w.provider.closed == [] and w.store.orders["ord_1"].status == "submitted"


@pytest.mark.parametrize("state", [PaymentState.PENDING, PaymentState.NOT_FOUND, PaymentState.FAILED])
async def test_an_unpaid_answer_at_the_expiry_closes_the_order_and_ends_it_expired(state: PaymentState) -> None:
    w = world([order()], [due(order(), expired=True)], FakeProvider(state))
    await handle_due_queries(w.deps, 10)
    assert w.provider.closed == ["ord_1"] and w.store.orders["ord_1"].status == "expired"
    assert [type(m) for _, m, _ in w.store.published] == [OrderExpired]
    assert w.schedule.finished == [["ord_1"]] and w.counts.expiries == 1


async def test_an_order_closed_at_the_provider_before_its_expiry_ends_expired_at_once() -> None:
    w = world([order()], [due(order())], FakeProvider(PaymentState.CLOSED))
    await handle_due_queries(w.deps, 10)
    assert w.store.orders["ord_1"].status == "expired"


async def test_an_order_paid_just_as_it_is_closed_is_applied_in_the_same_round_and_not_expired() -> None:
    provider = FakeProvider(close_answer=CloseStatus.ALREADY_PAID, pays_at_close=True)
    w = world([order()], [due(order(), expired=True)], provider)
    await handle_due_queries(w.deps, 10)
    assert w.store.orders["ord_1"].payment_status is PaymentStatus.SUCCEEDED and w.counts.recoveries == 1
    assert [type(m) for _, m, _ in w.store.published] == [PaymentSucceeded] and w.schedule.finished == [["ord_1"]]


async def test_a_close_that_says_paid_while_the_trade_reads_unpaid_is_asked_again_later_not_in_a_loop() -> None:
    """Each round re-asking at once a provider whose close and query disagree would query it in a tight loop."""
    w = world([order()], [due(order(), expired=True, attempts=4)], FakeProvider(close_answer=CloseStatus.ALREADY_PAID))
    await handle_due_queries(w.deps, 10)
    due_at, answer = w.schedule.rescheduled["ord_1"]
    assert due_at == NOW + POLICY.interval(4) and answer.startswith("paid at close, but the trade reads pending")
    assert w.store.orders["ord_1"].status == "submitted" and w.store.published == []


@pytest.mark.parametrize("close", [CloseStatus.UNKNOWN, None])
async def test_no_answer_at_the_expiry_never_expires_the_order(close: CloseStatus | None) -> None:
    provider = FakeProvider(
        PaymentState.UNKNOWN if close is None else PaymentState.PENDING, close or CloseStatus.CLOSED
    )
    w = world([order()], [due(order(), expired=True, attempts=7)], provider)
    await handle_due_queries(w.deps, 10)
    assert w.store.orders["ord_1"].status == "submitted" and w.store.published == []
    assert w.schedule.rescheduled["ord_1"][0] == NOW + POLICY.interval(7)


async def test_a_query_that_fails_leaves_its_row_leased_for_later_and_the_others_go_on() -> None:
    w = world([order("ord_1"), order("ord_2")], [due(order("ord_1")), due(order("ord_2"))], FakeProvider())
    w.provider.error = ConnectionResetError("gone")
    assert await handle_due_queries(w.deps, 10) == 2
    assert w.schedule.rescheduled == {} and w.schedule.finished == []
    assert all(o.status == "submitted" for o in w.store.orders.values())


async def test_an_order_already_paid_by_callback_is_not_expired_by_a_stale_query() -> None:
    w = world(
        [order(payment_status=PaymentStatus.SUCCEEDED, status="paid")], [due(order(), expired=True)], FakeProvider()
    )
    await handle_due_queries(w.deps, 10)
    assert w.store.orders["ord_1"].status == "paid" and w.store.published == [] and w.counts.expiries == 0


def until(condition: Callable[[], bool]) -> Awaitable[None]:
    return eventually(condition, timeout_s=5, interval_s=0.001)


@dataclass
class HeldProvider(FakeProvider):
    """Answers paid, but holds its answer about `held` until `release` is set (a provider slow on one order)."""

    held: str = "ord_1"
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def query_payment(self, order_id: str) -> PaymentQuery:
        if order_id == self.held:
            await self.release.wait()
        return await super().query_payment(order_id)


async def test_queries_falling_due_while_a_provider_is_slow_on_a_round_are_asked_without_waiting_for_it() -> None:
    slow, other = order("ord_1"), order("ord_2")
    provider = HeldProvider(PaymentState.PAID)
    w = world([slow, other], [due(slow), due(other)], provider)
    worker = QueryWorker(w.deps, batch=1, idle_s=0.01)
    running = asyncio.create_task(worker.run())
    try:
        await until(lambda: w.store.orders["ord_2"].payment_status is PaymentStatus.SUCCEEDED)
        assert w.store.orders["ord_1"].payment_status is PaymentStatus.PENDING
        provider.release.set()
        await until(lambda: w.store.orders["ord_1"].payment_status is PaymentStatus.SUCCEEDED)
        assert sorted(w.schedule.finished) == [["ord_1"], ["ord_2"]] and w.counts.recoveries == 2
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_stopped_worker_leaves_the_round_it_was_settling_leased_for_later() -> None:
    provider = HeldProvider(PaymentState.PAID)
    w = world([order()], [due(order())], provider)
    running = asyncio.create_task(QueryWorker(w.deps, batch=1, idle_s=0.01).run())
    await until(lambda: bool(w.counts.waits) and not w.schedule.due)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    provider.release.set()
    await asyncio.sleep(0.01)
    assert w.store.orders["ord_1"].payment_status is PaymentStatus.PENDING and w.schedule.finished == []


@dataclass
class GatedProvider(FakeProvider):
    """Answers paid about an order once its gate opens; counts the queries talking to it at once."""

    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    asking: set[str] = field(default_factory=set)
    most: int = 0

    def gate(self, order_id: str) -> asyncio.Event:
        return self.gates.setdefault(order_id, asyncio.Event())

    async def query_payment(self, order_id: str) -> PaymentQuery:
        self.asking.add(order_id)
        self.most = max(self.most, len(self.asking))
        try:
            await self.gate(order_id).wait()
            return await super().query_payment(order_id)
        finally:
            self.asking.discard(order_id)


async def test_no_more_queries_than_allowed_talk_to_providers_at_once_and_the_next_round_takes_what_fits() -> None:
    orders = [order(f"ord_{n}") for n in range(6)]
    provider = GatedProvider(PaymentState.PAID)
    w = world(orders, [due(o) for o in orders], provider)
    running = asyncio.create_task(QueryWorker(w.deps, batch=2, idle_s=0.01, asking=3).run())
    try:
        await until(lambda: provider.asking == {"ord_0", "ord_1", "ord_2"})
        await asyncio.sleep(0.05)  # no room for another while all three wait for their answers
        assert provider.asking == {"ord_0", "ord_1", "ord_2"} and len(w.schedule.due) == 3
        provider.gate("ord_0").set()
        await until(lambda: provider.asking == {"ord_1", "ord_2", "ord_3"})
        for o in orders:
            provider.gate(o.order_id).set()
        await until(lambda: all(o.payment_status is PaymentStatus.SUCCEEDED for o in w.store.orders.values()))
        assert provider.most == 3 and w.counts.recoveries == 6
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


def test_a_worker_without_a_batch_or_room_for_a_query_in_flight_is_refused() -> None:
    w = world([], [], FakeProvider())
    for bad in ({"batch": 0}, {"asking": 0}):
        with pytest.raises(ValueError, match="room for at least one query"):
            QueryWorker(w.deps, **bad)  # type: ignore[arg-type]


async def test_a_close_answered_closed_whose_trade_still_reads_open_does_not_expire_the_order() -> None:
    """WeChat Pay answers a close with an empty 204 that names no order, and a signed answer can be replayed: the
    order is expired only once the trade's own state (whose answer names it) reads closed."""
    provider = FakeProvider(PaymentState.PENDING, closes_trade=False)
    w = world([order()], [due(order(), expired=True, attempts=7)], provider)
    await handle_due_queries(w.deps, 10)
    assert w.provider.closed == ["ord_1"] and w.store.orders["ord_1"].status == "submitted"
    assert w.store.published == [] and w.schedule.finished == []
    due_at, answer = w.schedule.rescheduled["ord_1"]
    assert due_at == NOW + POLICY.interval(7) and "closed, but the trade reads pending" in answer


async def test_an_order_unknown_to_its_provider_at_expiry_is_expired_and_asked_about_until_the_grace_ends() -> None:
    """The platform creates the provider's trade: one unknown at the expiry can still be created and paid. The
    order is expired (the user told), and asked about again at doubling distances from the expiry, until
    `unknown_order_for_s` after it."""
    provider = FakeProvider(PaymentState.NOT_FOUND, close_answer=CloseStatus.NOT_FOUND)
    w = world([order()], [due(order(), expired=True, attempts=3)], provider)
    await handle_due_queries(w.deps, 10)
    assert w.store.orders["ord_1"].status == "expired" and w.counts.expiries == 1
    assert [type(m) for _, m, _ in w.store.published] == [OrderExpired] and w.schedule.finished == []
    assert w.schedule.rescheduled["ord_1"][0] == NOW + POLICY.interval(3)  # a second after the expiry

    hour_past = replace(due(order(), attempts=9), expires_at=NOW - timedelta(hours=1), status="expired")
    w = world([order(status="expired")], [hour_past], provider)
    await handle_due_queries(w.deps, 10)
    assert w.schedule.rescheduled["ord_1"][0] == NOW + timedelta(hours=1) and w.store.published == []

    past_grace = replace(hour_past, expires_at=NOW - timedelta(seconds=POLICY.unknown_order_for_s))
    w = world([order(status="expired")], [past_grace], provider)
    await handle_due_queries(w.deps, 10)
    assert w.schedule.finished == [["ord_1"]] and "ord_1" not in w.schedule.rescheduled


async def test_a_paid_answer_that_cannot_be_applied_holds_back_none_of_its_rounds_others() -> None:
    """A round's paid answers are applied in one transaction; one that fails (an answer the contract refuses) made
    every paid answer of the round wait for their lease, and fail again with it, for as long as it came back."""
    good, bad = order("ord_good"), order("ord_bad")
    w = world([good, bad], [due(good), due(bad)], FakeProvider(PaymentState.PAID))
    original = w.deps.uow

    def refusing() -> InMemoryPayments:
        unit = original()
        save = unit.save

        async def save_unless_bad(o: Order) -> None:
            if o.order_id == "ord_bad":
                raise ValueError("trade_no: String should have at most 128 characters")
            await save(o)

        unit.save = save_unless_bad  # type: ignore[method-assign]
        return unit

    w.deps = replace(w.deps, uow=refusing)
    await handle_due_queries(w.deps, 10)
    assert w.store.orders["ord_good"].payment_status is PaymentStatus.SUCCEEDED
    assert w.store.orders["ord_bad"].payment_status is PaymentStatus.PENDING
    assert w.schedule.finished == [["ord_good"]]
