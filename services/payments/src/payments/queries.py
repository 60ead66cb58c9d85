"""Active queries: payments asks the provider about an order whose callback has not come.

Each placed order whose channel has a provider we can ask gets a query schedule with the order (see
payments.schedule). A worker takes the due queries and asks each order's provider:
- paid: the answer is applied exactly as the callback would be (payments.callbacks), once;
- unpaid at the order's expiry (or closed already at the provider): the order is closed at the provider and
  ends `expired`, announced as OrderExpired, once the trade's own state says closed (a close's answer names no
  order we can check: WeChat Pay's is empty, and a signed answer can be replayed);
- unknown to the provider at the expiry: expired the same way, and asked about for a while more
  (QueryPolicy.after_unknown): the platform creates the provider's trade, and a user can still start paying it;
- anything else, and any answer that could not be had (a provider's silence, the database away): asked again
  later, with backoff. An order is never expired without the provider saying it is closed or unknown to it.
A query is taken only once it is due by as much as the paid callbacks are late now (payments.lateness), at most
one query delay more: an order whose callback is merely late is not asked about.
"""

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from contracts.codec import deterministic_id
from contracts.events import OrderExpired
from contracts.topics import Topic
from payments.callbacks import handle_paid_answers
from payments.domain import (
    EXPIRED,
    CloseStatus,
    Outcome,
    Payers,
    PaymentQuery,
    PaymentState,
    PaymentStatus,
    ReviewRule,
)
from payments.ports import Clock, PaymentProviders, UnitOfWorkFactory
from payments.schedule import QueryPolicy
from servicekit.logs import about

log = logging.getLogger(__name__)

_UNPAID = (PaymentState.PENDING, PaymentState.FAILED, PaymentState.NOT_FOUND, PaymentState.CLOSED)


@dataclass(frozen=True, slots=True)
class DueQuery:
    """A query taken from the schedule: its order, who to ask, when the order expires, how many times it was
    asked before (this one included), and the order's payment status when it was taken."""

    order_id: str
    provider: str
    channel: str
    expires_at: datetime
    attempts: int
    payment_status: PaymentStatus
    status: str


class QuerySchedule(Protocol):
    """The durable schedule of payment queries."""

    async def claim(
        self, due_by: datetime, limit: int, lease_until: datetime, rooms: Mapping[str, int] | None = None
    ) -> list[DueQuery]:
        """Take up to `limit` queries due at `due_by` or before, each counted as one more attempt and not due
        again before `lease_until` (so no other worker takes it meanwhile, and it comes back if this one dies);
        with `rooms`, only of those providers and at most so many of each."""
        ...

    async def reschedule(self, order_id: str, due_at: datetime, answer: str) -> None:
        """Ask about the order again at `due_at`; `answer` says what the last query found."""
        ...

    async def finish(self, order_ids: Sequence[str]) -> None:
        """No more queries for these orders."""
        ...

    async def next_due(self) -> datetime | None:
        """When the earliest query not taken now falls due; None when the schedule is empty."""
        ...


class QueryObserver(Protocol):
    """What the worker counts."""

    def answered(self, provider: str, state: PaymentState) -> None: ...

    def recovered(self, provider: str, channel: str) -> None:
        """A payment applied because a query found it (its callback had not come)."""
        ...

    def expired(self, provider: str, channel: str) -> None: ...

    def clamped(self, provider: str) -> None:
        """A paid answer's paid_at was too far ahead of now and was clamped to now."""

    def waiting(self, seconds: float) -> None:
        """The worker now takes queries this long after they are due (the callbacks' lateness it waits out)."""


class CallbackLag(Protocol):
    """How late paid callbacks arrive now (payments.lateness.CallbackLateness)."""

    def seconds(self, now: float) -> float: ...


class OnTime:
    """No lateness to wait out: queries are taken when due."""

    def seconds(self, now: float) -> float:
        return 0.0


@dataclass(frozen=True, slots=True)
class QueryDeps:
    """What the query use case needs."""

    schedule: QuerySchedule
    providers: PaymentProviders
    uow: UnitOfWorkFactory
    clock: Clock
    policy: QueryPolicy
    observer: QueryObserver
    review: ReviewRule | None = None
    lease_s: float = 60.0
    lag: CallbackLag = field(default_factory=OnTime)


@dataclass(frozen=True, slots=True)
class Round:
    """Queries taken together at `now`, leased to the round until settled."""

    queries: list[DueQuery]
    now: datetime


async def take_due_queries(deps: QueryDeps, limit: int, rooms: Mapping[str, int] | None = None) -> Round:
    """Take up to `limit` queries due by the callbacks' lateness now (at most one query delay); with `rooms`,
    at most so many of each of those providers."""
    clock_now = deps.clock.now()
    now = datetime.fromtimestamp(clock_now, UTC)
    wait = _lateness_waited(deps, clock_now)
    deps.observer.waiting(wait)
    cutoff = now - timedelta(seconds=wait)
    taken = await deps.schedule.claim(cutoff, limit, datetime.fromtimestamp(clock_now + deps.lease_s, UTC), rooms)
    return Round(taken, now)


def _nothing(_: DueQuery) -> None:
    return None


async def settle_round(deps: QueryDeps, taken: Round, *, done_asking: Callable[[DueQuery], None] = _nothing) -> None:
    """Ask about each query of the round at once, then apply its paid answers together. `done_asking` is called
    once for each query of the round as soon as it no longer talks to its provider (for one already settled,
    at once)."""
    # A settled order's row leaves with the statement that settles it; one still here (left by a version that
    # kept rows until their query) goes without asking, the round's such rows in one statement.
    queries, now = taken.queries, taken.now
    # An expired order still here is one its provider did not know at its expiry: it is asked about a while more.
    settled = {q.order_id for q in queries if q.payment_status is PaymentStatus.SUCCEEDED}
    for query in queries:
        if query.order_id in settled:
            done_asking(query)
    if settled:
        await deps.schedule.finish(sorted(settled))
    due = [q for q in queries if q.order_id not in settled]

    async def ask(query: DueQuery) -> PaymentQuery | None:
        try:
            return await _settle(deps, query, now)
        finally:
            done_asking(query)

    outcomes = await asyncio.gather(*(ask(query) for query in due), return_exceptions=True)
    paid: list[tuple[DueQuery, PaymentQuery]] = []
    for query, outcome in zip(due, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            _failed(query, outcome)
        elif outcome is not None:
            paid.append((query, outcome))
    if paid:
        try:
            await _apply_paid(deps, paid)
        except Exception:  # noqa: BLE001 - one at a time: one answer that cannot be applied holds back no other
            for one in paid:
                try:
                    await _apply_paid(deps, [one])
                except Exception as exc:  # noqa: BLE001 - its row stays leased and comes back, as for a failed query
                    _failed(one[0], exc)


async def handle_due_queries(deps: QueryDeps, limit: int) -> int:
    """One round: take the due queries and settle each; the number taken."""
    taken = await take_due_queries(deps, limit)
    await settle_round(deps, taken)
    return len(taken.queries)


def _lateness_waited(deps: QueryDeps, clock_now: float) -> float:
    return min(deps.lag.seconds(clock_now), deps.policy.delay_s)


async def seconds_until_due(deps: QueryDeps, *, least_s: float, most_s: float) -> float:
    """How long the worker may sleep after a round that left nothing due: until the earliest query falls due
    by the callbacks' lateness now, at least `least_s` (so a schedule always about to fall due, as at a peak,
    is claimed in rounds, not in a spin) and at most `most_s` (so a query scheduled meanwhile, or a lateness
    that shrank, waits no longer than that)."""
    earliest = await deps.schedule.next_due()
    if earliest is None:
        return most_s
    clock_now = deps.clock.now()
    due_in = earliest.timestamp() + _lateness_waited(deps, clock_now) - clock_now
    return min(most_s, max(least_s, due_in))


def _failed(query: DueQuery, error: BaseException) -> None:
    # The row stays leased and comes back when the lease ends: never expired on an error.
    log.warning(
        "query of order %s via %s failed, will retry: %r",
        query.order_id,
        query.provider,
        error,
        extra=about(query.order_id),
    )


async def _settle(deps: QueryDeps, query: DueQuery, now: datetime) -> PaymentQuery | None:
    """Ask about one order; its paid answer, which the round applies with the others', or None when this
    settled what the answer asked for (closed the order, or scheduled the next query)."""
    provider = deps.providers.get(query.provider)
    if provider is None:
        log.warning(
            "order %s: no provider %s configured to ask", query.order_id, query.provider, extra=about(query.order_id)
        )
        await _later(deps, query, now, "no such provider configured")
        return None
    answer = await provider.query_payment(query.order_id)
    deps.observer.answered(query.provider, answer.state)
    if answer.state is PaymentState.PAID:
        return answer
    if answer.state is PaymentState.CLOSED or (answer.state in _UNPAID and now >= query.expires_at):
        return await _close(deps, query, now, closed=answer.state is PaymentState.CLOSED)
    else:
        await _later(deps, query, now, f"{answer.state}: {answer.reason}")
    return None


async def _apply_paid(deps: QueryDeps, paid: Sequence[tuple[DueQuery, PaymentQuery]]) -> None:
    """A round's paid answers, applied in one transaction (as a group of callbacks is), then off the schedule."""
    answers = [answer for _, answer in paid]
    payers = Payers(deps.policy.providers)  # an answer comes from the provider its channel's queries ask
    results = await handle_paid_answers(answers, uow=deps.uow, clock=deps.clock, payers=payers, review=deps.review)
    for (query, answer), result in zip(paid, results, strict=True):
        if result.paid_at_clamped:
            deps.observer.clamped(query.provider)
        if result.outcome is Outcome.PAID:
            deps.observer.recovered(query.provider, query.channel)
            log.info(
                "order %s paid via %s found by query: %s",
                query.order_id,
                query.provider,
                answer.provider_txn_id,
                extra=about(query.order_id),
            )
        elif result.outcome is Outcome.REJECTED:
            log.error(
                "order %s: the provider's paid answer was refused: %s",
                query.order_id,
                result.detail,
                extra=about(query.order_id),
            )
    await deps.schedule.finish(sorted(query.order_id for query, _ in paid))


async def _close(deps: QueryDeps, query: DueQuery, now: datetime, *, closed: bool) -> PaymentQuery | None:
    """Close the order at its provider and expire it; `closed`: the trade's own state said closed already. A
    paid answer found on the way is returned, for the round to apply."""
    provider = deps.providers.get(query.provider)
    assert provider is not None
    answer = await provider.close(query.order_id)
    if answer.status is CloseStatus.ALREADY_PAID:
        # Paid as it was closed: the payment, asked for now, is applied with the round's others. A trade that does
        # not read paid (the provider's two answers disagree) is asked again later, not in a loop of rounds.
        trade = await provider.query_payment(query.order_id)
        if trade.state is PaymentState.PAID:
            return trade
        await _later(deps, query, now, f"paid at close, but the trade reads {trade.state}: {trade.reason}")
    elif answer.status is CloseStatus.UNKNOWN:
        await _later(deps, query, now, f"close unanswered: {answer.reason}")
    elif answer.status is CloseStatus.NOT_FOUND:
        await _unknown_to_provider(deps, query, now)
    elif closed:
        await _expire(deps, query, now)
    else:
        # "Closed" names no trade we can check (WeChat Pay answers an empty 204; a signed answer about another
        # order can be replayed): the trade's own state, whose answer names it, says whether it is.
        trade = await provider.query_payment(query.order_id)
        if trade.state is PaymentState.PAID:
            return trade
        if trade.state is PaymentState.CLOSED:
            await _expire(deps, query, now)
        elif trade.state is PaymentState.NOT_FOUND:
            await _unknown_to_provider(deps, query, now)
        else:
            await _later(deps, query, now, f"closed, but the trade reads {trade.state}: {trade.reason}")
    return None


async def _expire(deps: QueryDeps, query: DueQuery, now: datetime) -> None:
    if await expire_order(query, deps.uow, now):
        deps.observer.expired(query.provider, query.channel)
    await deps.schedule.finish([query.order_id])


async def _unknown_to_provider(deps: QueryDeps, query: DueQuery, now: datetime) -> None:
    """The provider never had the order: nothing to close, and the user told it closed; but the platform may
    still create the trade and the user pay it, so it is asked about a while more (a payment found is applied
    to the expired order and credited)."""
    if await expire_order(query, deps.uow, now):
        deps.observer.expired(query.provider, query.channel)
    again = deps.policy.after_unknown(query.attempts, now, query.expires_at)
    if again is None:
        await deps.schedule.finish([query.order_id])
    else:
        await deps.schedule.reschedule(query.order_id, again, "unknown to the provider: expired, still asked")


async def _later(deps: QueryDeps, query: DueQuery, now: datetime, answer: str) -> None:
    due = deps.policy.next_due(query.attempts, now, query.expires_at)
    await deps.schedule.reschedule(query.order_id, due, answer[:200])


async def expire_order(query: DueQuery, uow: UnitOfWorkFactory, now: datetime) -> bool:
    """End the order, closed unpaid at its provider, as expired and announce it; False when it was paid or
    expired meanwhile."""
    async with uow() as tx:
        order = await tx.get(query.order_id, for_update=True)
        if order is None or order.payment_status is PaymentStatus.SUCCEEDED or order.status == EXPIRED:
            return False
        await tx.save(replace(order, status=EXPIRED))
        expired = OrderExpired(
            order_id=order.order_id,
            user_id=order.user_id,
            amount=order.amount,
            currency=order.currency,
            channel=order.channel,
            provider=query.provider,
            placed_at=order.created_at,
            expired_at=now,
        )
        tx.publish(Topic.PAYMENTS_EVENTS, expired, event_id=deterministic_id("OrderExpired", order.order_id))
    log.info("order %s expired unpaid and closed at %s", query.order_id, query.provider, extra=about(query.order_id))
    return True


class QueryWorker:
    """Asks the providers about due queries until cancelled: takes the next round at once while there were due
    ones, else when the next falls due (checked every `idle_s` at most, `least_idle_s` at least), with backoff
    while the database is away. Rounds overlap: the next is taken while the last is still being answered, of as
    many queries as `asking` leaves room for (at most `batch`), so queries falling due while a provider is slow
    to answer a few of the last round are asked when due, not after it. No more than `asking` ever talk to one
    provider at once (each provider's connections are a pool of that size: a query waiting there for one would
    spend its timeout waiting), and the room is each provider's own: a provider that is down, whose queries each
    wait out a timeout, never holds back another's (its many pending orders fell due first and would take every
    round). Each round's rows are leased to it, so no two rounds ask about one order."""

    def __init__(
        self,
        deps: QueryDeps,
        *,
        batch: int = 50,
        idle_s: float = 1.0,
        least_idle_s: float = 0.1,
        asking: int = 64,
        max_wait_s: float = 30.0,
    ) -> None:
        if batch < 1 or asking < 1:
            raise ValueError("the query worker needs a batch and room for at least one query in flight")
        self.deps = deps
        self.batch = batch
        self.idle_s = idle_s
        self.least_idle_s = min(least_idle_s, idle_s)
        self.asking = asking
        self.max_wait_s = max_wait_s
        self.in_flight: Counter[str] = Counter()
        """Queries taken and still talking to their provider (or about to), by provider."""
        self._room = asyncio.Event()

    def _rooms(self) -> dict[str, int]:
        """How many more queries each configured provider may take now: the providers with room."""
        rooms = {name: min(self.batch, self.asking - self.in_flight[name]) for name in self.deps.providers.names}
        return {name: room for name, room in rooms.items() if room > 0}

    async def run(self) -> None:
        settling: set[asyncio.Task[None]] = set()
        wait = self.idle_s
        try:
            while True:
                while not (rooms := self._rooms()):
                    self._room.clear()
                    await self._room.wait()
                limit = min(self.batch, sum(rooms.values()))
                try:
                    taken = await take_due_queries(self.deps, limit, rooms)
                except Exception as exc:  # noqa: BLE001 - the schedule is durable: wait and take it again
                    log.warning("could not take due payment queries, will retry in %.1f s: %r", wait, exc)
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, self.max_wait_s)
                    continue
                wait = self.idle_s
                # A claimed round is asked at once, whatever happens next: left unsettled, its rows would wait out
                # their lease (three provider timeouts) before anyone asked about them.
                if taken.queries:
                    self.in_flight.update(q.provider for q in taken.queries)
                    task = asyncio.create_task(self._settle(taken))
                    settling.add(task)
                    task.add_done_callback(settling.discard)
                took = Counter(q.provider for q in taken.queries)
                more = len(taken.queries) >= limit or any(took[name] >= room for name, room in rooms.items())
                pause = 0.0 if more else await self._until_due()
                if pause > 0:
                    await asyncio.sleep(pause)
        finally:
            # Rounds cut short keep their rows leased: they come back when the lease ends.
            for task in settling:
                task.cancel()
            await asyncio.gather(*settling, return_exceptions=True)

    async def _until_due(self) -> float:
        try:
            return await seconds_until_due(self.deps, least_s=self.least_idle_s, most_s=self.idle_s)
        except Exception as exc:  # noqa: BLE001 - the database blinked: look again after the longest sleep
            log.warning("could not read when the next payment query is due: %r", exc)
            return self.idle_s

    async def _settle(self, taken: Round) -> None:
        outstanding = Counter(q.provider for q in taken.queries)

        def done_asking(query: DueQuery) -> None:
            outstanding[query.provider] -= 1
            self._free(Counter({query.provider: 1}))

        try:
            await settle_round(self.deps, taken, done_asking=done_asking)
        except Exception as exc:  # noqa: BLE001 - its rows stay leased and come back when the lease ends
            log.warning("a round of %d payment queries failed, its queries will retry: %r", len(taken.queries), exc)
        finally:
            self._free(outstanding)

    def _free(self, queries: Counter[str]) -> None:
        self.in_flight.subtract(queries)
        self._room.set()
