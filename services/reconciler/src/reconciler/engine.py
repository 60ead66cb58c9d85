"""The reconciler's core: per-order transitions plus a durable timer index per partition. Pure: no I/O.

The index is not state of its own: it is rebuilt from the order states whenever partitions are
assigned (after a restart or a rebalance), so a deadline that passed while no worker owned the
partition fires on the first tick after recovery. Entries are checked against the current state when
they come due, so stale ones cost nothing.
"""

import heapq
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
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
from reconciler import domain, review
from reconciler.domain import OrderState, Policy, Result
from reconciler.ports import OrderStates

Transition = Callable[[OrderState, Any, datetime, Policy], Result]

TRANSITIONS: dict[type[Message], Transition] = {
    PaymentSucceeded: domain.on_payment_succeeded,
    PaymentFailed: domain.on_payment_failed,
    OrderHeld: review.on_order_held,
    OrderReleased: review.on_order_released,
    OrderReviewRejected: review.on_review_rejected,
    CreditPosted: domain.on_credit_posted,
    CreditRejected: domain.on_credit_rejected,
    RefundSucceeded: domain.on_refund_succeeded,
    RefundFailed: domain.on_refund_failed,
}


class Engine:
    """Applies events and clock ticks to order states; the caller publishes the effects, then commits."""

    def __init__(self, states: OrderStates, policy: Policy) -> None:
        self.states = states
        self.policy = policy
        self._deadlines: dict[int, list[tuple[datetime, str]]] = {}
        self._actions: dict[int, list[tuple[datetime, str]]] = {}

    def apply(self, message: Message, partition: int, now: datetime) -> Result | None:
        """The order's next state and effects for `message`, or None if the reconciler ignores its type."""
        transition = TRANSITIONS.get(type(message))
        if transition is None:
            return None
        before = self.states.get(message.order_id) or OrderState(message.order_id, partition=partition)
        if before.partition != partition:
            before = replace(before, partition=partition)
        return transition(before, message, now, self.policy)

    def commit(self, state: OrderState) -> None:
        """Store the state and schedule its next wake-up."""
        self.states.put(state)
        self._track(state)

    def _track(self, state: OrderState) -> None:
        wake = domain.wake_time(state, self.policy)
        if wake is None:
            return
        kind, at = wake
        heaps = self._deadlines if kind == "deadline" else self._actions
        heapq.heappush(heaps.setdefault(state.partition, []), (at, state.order_id))

    def due(self, partition: int, now: datetime, safe_time: datetime | None) -> list[Result]:
        """Transitions that time makes happen now in `partition`: deadlines against the safe time (the
        credit stream is complete up to it), retries against the wall clock."""
        results: list[Result] = []
        moved: set[str] = set()  # one transition per order per call: the caller commits after we return
        for heaps, limit, kind in (
            (self._deadlines, safe_time, "deadline"),
            (self._actions, now, "action"),
        ):
            heap = heaps.get(partition)
            while heap and limit is not None and heap[0][0] <= limit:
                at, order_id = heapq.heappop(heap)
                state = None if order_id in moved else self.states.get(order_id)
                if state is None or domain.wake_time(state, self.policy) != (kind, at):
                    continue
                moved.add(order_id)
                result = domain.on_tick(state, now, safe_time or datetime.min.replace(tzinfo=now.tzinfo), self.policy)
                if result[1] or result[0] != state:
                    results.append(result)
        return results

    def rebuild(self, partitions: Iterable[int], all_states: Iterable[OrderState]) -> int:
        """Re-create the timer index of `partitions` from the stored states; return how many are pending."""
        wanted = set(partitions)
        for p in wanted:
            self._deadlines[p] = []
            self._actions[p] = []
        pending = 0
        for state in all_states:
            if state.partition in wanted and domain.wake_time(state, self.policy) is not None:
                self._track(state)
                pending += 1
        return pending

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions moved to another worker: their timers go with their state."""
        for p in partitions:
            self._deadlines.pop(p, None)
            self._actions.pop(p, None)

    def pending(self, partition: int) -> int:
        return len(self._deadlines.get(partition, ())) + len(self._actions.get(partition, ()))
