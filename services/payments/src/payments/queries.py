"""Active queries: payments asks the provider about an order whose callback has not come.

Each placed order whose channel has a provider we can ask gets a query schedule with the order (see
payments.schedule). A worker takes the due queries and asks each order's provider:
- paid: the answer is applied exactly as the callback would be (payments.callbacks), once;
- unpaid at the order's expiry (or closed already at the provider): the order is closed at the provider and
  ends `expired`, announced as OrderExpired;
- anything else, and any answer that could not be had (a provider's silence, the database away): asked again
  later, with backoff. An order is never expired without the provider saying it is closed or unknown to it.
A query is taken only once it is due by as much as the paid callbacks are late now (payments.lateness), at most
one query delay more: an order whose callback is merely late is not asked about.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
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

    async def claim(self, due_by: datetime, limit: int, lease_until: datetime) -> list[DueQuery]:
        """Take up to `limit` queries due at `due_by` or before, each counted as one more attempt and not due
        again before `lease_until` (so no other worker takes it meanwhile, and it comes back if this one dies)."""
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


async def take_due_queries(deps: QueryDeps, limit: int) -> Round:
    """Take up to `limit` queries due by the callbacks' lateness now (at most one query delay)."""
    clock_now = deps.clock.now()
    now = datetime.fromtimestamp(clock_now, UTC)
    wait = _lateness_waited(deps, clock_now)
    deps.observer.waiting(wait)
    cutoff = now - timedelta(seconds=wait)
    taken = await deps.schedule.claim(cutoff, limit, datetime.fromtimestamp(clock_now + deps.lease_s, UTC))
    return Round(taken, now)


def _nothing() -> None:
    return None


async def settle_round(deps: QueryDeps, taken: Round, *, done_asking: Callable[[], None] = _nothing) -> None:
    """Ask about each query of the round at once, then apply its paid answers together. `done_asking` is called
    once for each query of the round as soon as it no longer talks to its provider (for one already settled,
    at once)."""
    # A settled order's row leaves with the statement that settles it; one still here (left by a version that
    # kept rows until their query) goes without asking, the round's such rows in one statement.
    queries, now = taken.queries, taken.now
    settled = {q.order_id for q in queries if q.payment_status is PaymentStatus.SUCCEEDED or q.status == EXPIRED}
    for _ in settled:
        done_asking()
    if settled:
        await deps.schedule.finish(sorted(settled))
    due = [q for q in queries if q.order_id not in settled]

    async def ask(query: DueQuery) -> PaymentQuery | None:
        try:
            return await _settle(deps, query, now)
        finally:
            done_asking()

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
        except Exception as exc:  # noqa: BLE001 - the rows stay leased and come back, as for a failed query
            for query, _ in paid:
                _failed(query, exc)


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
        await _close(deps, query, now)
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


async def _close(deps: QueryDeps, query: DueQuery, now: datetime) -> None:
    provider = deps.providers.get(query.provider)
    assert provider is not None
    closed = await provider.close(query.order_id)
    if closed.status is CloseStatus.ALREADY_PAID:
        await deps.schedule.reschedule(query.order_id, now, "paid at close: ask again now")
    elif closed.status is CloseStatus.UNKNOWN:
        await _later(deps, query, now, f"close unanswered: {closed.reason}")
    else:
        if await expire_order(query, deps.uow, now):
            deps.observer.expired(query.provider, query.channel)
        await deps.schedule.finish([query.order_id])


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
    to answer a few of the last round are asked when due, not after it, and no more than `asking` ever talk to
    the providers at once (a provider's connections are a pool of that size: a query waiting there for one
    would spend its timeout waiting). Each round's rows are leased to it, so no two rounds ask about one
    order."""

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
        self.in_flight = 0
        """Queries taken and still talking to their provider (or about to)."""
        self._room = asyncio.Event()

    async def run(self) -> None:
        settling: set[asyncio.Task[None]] = set()
        wait = self.idle_s
        try:
            while True:
                while self.in_flight >= self.asking:
                    self._room.clear()
                    await self._room.wait()
                limit = min(self.batch, self.asking - self.in_flight)
                try:
                    taken = await take_due_queries(self.deps, limit)
                    pause = (
                        0.0
                        if len(taken.queries) >= limit
                        else await seconds_until_due(self.deps, least_s=self.least_idle_s, most_s=self.idle_s)
                    )
                except Exception as exc:  # noqa: BLE001 - the schedule is durable: wait and take it again
                    log.warning("could not take due payment queries, will retry in %.1f s: %r", wait, exc)
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, self.max_wait_s)
                    continue
                wait = self.idle_s
                if taken.queries:
                    self.in_flight += len(taken.queries)
                    task = asyncio.create_task(self._settle(taken))
                    settling.add(task)
                    task.add_done_callback(settling.discard)
                if pause > 0:
                    await asyncio.sleep(pause)
        finally:
            # Rounds cut short keep their rows leased: they come back when the lease ends.
            for task in settling:
                task.cancel()
            await asyncio.gather(*settling, return_exceptions=True)

    async def _settle(self, taken: Round) -> None:
        outstanding = len(taken.queries)

        def done_asking() -> None:
            nonlocal outstanding
            outstanding -= 1
            self._free(1)

        try:
            await settle_round(self.deps, taken, done_asking=done_asking)
        except Exception as exc:  # noqa: BLE001 - its rows stay leased and come back when the lease ends
            log.warning("a round of %d payment queries failed, its queries will retry: %r", len(taken.queries), exc)
        finally:
            self._free(outstanding)

    def _free(self, queries: int) -> None:
        self.in_flight -= queries
        self._room.set()
