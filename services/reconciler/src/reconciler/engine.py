"""The reconciler's core: per-order transitions plus a timer index per partition. Pure: no I/O.

The index is not state of its own: it is rebuilt from the order states whenever partitions are
assigned (after a restart or a rebalance), so a deadline that passed while no worker owned the
partition fires on the first tick after recovery. Entries are checked against the current state when
they come due, so stale ones cost nothing. A third index holds when settled orders leave the table.

The retention horizon of a partition (events older than it, for orders the table does not have, are ignored) is
not rebuilt from the states: the orders it stands for are gone from them. The worker writes it to the table's
changelog in every round that drops orders (adapters/table.py) and hands it back here when the table is restored
(`restore_horizon`), so a restart or a rebalance does not apply a late event for a dropped order as a new order.
"""

import heapq
from collections.abc import Callable, Iterable
from datetime import datetime
from operator import attrgetter
from typing import Any

from contracts.base import Message
from contracts.events import (
    CreditPosted,
    CreditRejected,
    OrderHeld,
    OrderReleased,
    OrderReviewRejected,
    PaymentFailed,
    PaymentSucceeded,
    RefundFailed,
    RefundSucceeded,
)
from reconciler import join, review, timers
from reconciler.domain import Effect, OrderState, Policy
from reconciler.ports import OrderStates

Transition = Callable[[OrderState, Any, datetime, Policy], list[Effect]]
Result = tuple[OrderState, list[Effect]]

TRANSITIONS: dict[type[Message], tuple[Transition, Callable[[Any], datetime]]] = {
    PaymentSucceeded: (join.on_payment_succeeded, attrgetter("paid_at")),
    PaymentFailed: (join.on_payment_failed, attrgetter("failed_at")),
    OrderHeld: (review.on_order_held, attrgetter("held_at")),
    OrderReleased: (review.on_order_released, attrgetter("released_at")),
    OrderReviewRejected: (review.on_review_rejected, attrgetter("rejected_at")),
    CreditPosted: (join.on_credit_posted, attrgetter("credited_at")),
    CreditRejected: (join.on_credit_rejected, attrgetter("rejected_at")),
    RefundSucceeded: (join.on_refund_succeeded, attrgetter("refunded_at")),
    RefundFailed: (join.on_refund_failed, attrgetter("failed_at")),
}
Heap = list[tuple[datetime, str]]
Wake = tuple[dict[int, Heap], datetime]


class Engine:
    """Applies events and clock ticks to order states; the caller publishes the effects, then commits."""

    def __init__(self, states: OrderStates, policy: Policy) -> None:
        self.states = states
        self.policy = policy
        self._deadlines: dict[int, Heap] = {}
        self._actions: dict[int, Heap] = {}
        self._expiries: dict[int, Heap] = {}
        # Events older than this, for orders not stored, are ignored. It only grows: a horizon held from before a
        # partition moved, or restored from its changelog, is never past the one its owner would set.
        self._horizon: dict[int, datetime] = {}
        self._retention = policy.retention
        # The wake-up `apply` computed for the state it returned, kept for `commit` to schedule: what the caller does
        # in between (announcing renumbers the state's statuses) never changes what the clock reads of it.
        self._applied: tuple[OrderState, Wake | None] | None = None

    def apply(
        self, message: Message, partition: int, now: datetime, arrived_at: datetime | None = None
    ) -> Result | None:
        """The order's next state and effects for `message`, or None if nothing changes (a repeat, a type the
        reconciler ignores, or an event past the retention for an order the table no longer has). `arrived_at` is
        when the record reached its topic (the broker's timestamp), if known: a PaymentSucceeded's tells whether
        the order, if it goes overdue, does so because its payment came late (timers.py). Unknown, an overdue order
        counts as one whose credit is missing."""
        found = TRANSITIONS.get(type(message))
        if found is None:
            return None
        transition, event_time = found
        before = self.states.get(message.order_id)
        if before is None:
            horizon = self._horizon.get(partition)
            if horizon is not None and event_time(message) < horizon:
                return None
            state = OrderState(message.order_id, partition=partition)
        else:
            state = before.copy()
            state.partition = partition
        history = state.history
        effects = transition(state, message, now, self.policy)
        # Every change a transition makes notes itself in the history (a new tuple): unchanged, it is the same.
        if state.history is history:
            return None
        if arrived_at is not None and type(message) is PaymentSucceeded and not (before is not None and before.paid):
            state.payment_arrived_at = arrived_at  # the payment that set the deadline (not a held order's, released)
        # Its next wake-up too, here, before the caller announces or commits anything: a time past the calendar's
        # end (a valid event time a threshold away from it) raises OverflowError, and the record is refused whole.
        self._applied = state, self._wake_up(state)
        return state, effects

    def commit(self, state: OrderState) -> None:
        """Store the state and schedule its next wake-up."""
        self.states.put(state)
        self.track(state)

    def track(self, state: OrderState) -> None:
        """Schedule the state's next wake-up, or the end of its retention."""
        applied, self._applied = self._applied, None
        wake_up = applied[1] if applied is not None and applied[0] is state else self._wake_up(state)
        if wake_up is not None:
            heaps, at = wake_up
            heapq.heappush(heaps.setdefault(state.partition, []), (at, state.order_id))

    def _wake_up(self, state: OrderState) -> Wake | None:
        """The timer index the state goes in, and when: its next wake-up, or the end of its retention."""
        wake = timers.wake_time(state, self.policy)
        if wake is not None:
            kind, at = wake
            return (self._deadlines if kind == "deadline" else self._actions), at
        settled = timers.settled_at(state, self.policy)
        return None if settled is None else (self._expiries, settled + self._retention)

    def due(self, partition: int, now: datetime, safe_time: datetime | None) -> list[Result]:
        """Transitions that time makes happen now in `partition`: deadlines against the safe time (the
        credit stream is complete up to it), retries against the wall clock."""
        results: list[Result] = []
        moved: set[str] = set()  # one transition per order per call: the caller commits after we return
        for heaps, limit, kind in ((self._deadlines, safe_time, "deadline"), (self._actions, now, "action")):
            heap = heaps.get(partition)
            while heap and limit is not None and heap[0][0] <= limit:
                at, order_id = heapq.heappop(heap)
                stored = None if order_id in moved else self.states.get(order_id)
                if stored is None or timers.wake_time(stored, self.policy) != (kind, at):
                    continue
                moved.add(order_id)
                state = stored.copy()
                effects = timers.on_tick(state, now, safe_time or datetime.min.replace(tzinfo=now.tzinfo), self.policy)
                if state.history is not stored.history:
                    results.append((state, effects))
        return results

    def expired(self, partition: int, safe_time: datetime, limit: int | None = None) -> list[str]:
        """Settled orders of `partition` whose retention ended by `safe_time`, at most `limit` of them (the
        rest at the next call): the caller drops them. From then on, events older than the retention for
        orders not stored are ignored."""
        self.restore_horizon(partition, safe_time - self._retention)
        heap, gone = self._expiries.get(partition), list[str]()
        while heap and heap[0][0] <= safe_time and (limit is None or len(gone) < limit):
            at, order_id = heapq.heappop(heap)
            state = self.states.get(order_id)
            settled = None if state is None else timers.settled_at(state, self.policy)
            if settled is not None and settled + self._retention == at:
                gone.append(order_id)
        return gone

    def horizon(self, partition: int) -> datetime | None:
        """The retention horizon of `partition`, if known: what the table's changelog keeps of it."""
        return self._horizon.get(partition)

    def restore_horizon(self, partition: int, at: datetime) -> None:
        """The horizon of `partition` is at least `at` (read back from the table's changelog, or newly set)."""
        known = self._horizon.get(partition)
        if known is None or at > known:
            self._horizon[partition] = at

    def rebuild(self, partitions: Iterable[int], all_states: Iterable[OrderState]) -> int:
        """Re-create the timer index of `partitions` from the stored states; return how many are pending."""
        wanted = set(partitions)
        for index in (self._deadlines, self._actions, self._expiries):
            for p in wanted:
                index[p] = []
        for state in all_states:
            if state.partition in wanted:
                self.track(state)
        return sum(self.pending(p) for p in wanted)

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions moved to another worker: their timers go with their state. Their horizons stay: one that
        comes back has had its changelog restored already when the ticker forgets and rebuilds it."""
        for p in partitions:
            for index in (self._deadlines, self._actions, self._expiries):
                index.pop(p, None)

    def pending(self, partition: int) -> int:
        """Orders of `partition` waiting on a deadline or a retry (settled ones waiting to leave not counted)."""
        return len(self._deadlines.get(partition, ())) + len(self._actions.get(partition, ()))
