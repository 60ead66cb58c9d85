"""The reconciler's bench entry point: all the benchmarks (packages/harness) may use of the reconciler's code.

Three things, each measured there against the running worker: the engine alone on a replayed event log (the
ceiling of one core without Kafka), the changelog value of a settled order exactly as the table writes it (the
table-size bench fills a changelog with a million of them), and the faust settings a bare faust agent shares
with the worker (faust's own ceiling). Everything else the benchmarks learn from the worker's HTTP and Kafka.
"""

import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from contracts.base import Message
from contracts.events import OrderStatus
from reconciler.adapters.faust_app import faust_options
from reconciler.adapters.table import encode_state
from reconciler.config import Settings
from reconciler.domain import OrderState, Phase, Policy
from reconciler.engine import Engine

__all__ = ["Settings", "engine_throughput", "faust_options", "settled_changelog_value"]


class _DictStates:
    """Order states in a dict, as the faust table's memory store holds them (each is encoded only when its
    changelog record is written, once per batch: here once per put)."""

    def __init__(self) -> None:
        self.data: dict[str, OrderState] = {}

    def get(self, order_id: str) -> OrderState | None:
        return self.data.get(order_id)

    def put(self, state: OrderState) -> None:
        self.data[state.order_id] = state
        encode_state(state)

    def values(self) -> Iterator[OrderState]:
        return iter(list(self.data.values()))


def engine_throughput(
    log: Sequence[Message], *, threshold_s: float, now: datetime, tick_at: datetime
) -> dict[str, Any]:
    """The engine alone applies `log` at `now` on one partition, then one tick at `tick_at` finds the overdue."""
    engine = Engine(_DictStates(), Policy(threshold_s=threshold_s))
    started = time.perf_counter()
    for message in log:
        result = engine.apply(message, 0, now)
        if result is not None:
            state, _ = result
            engine.commit(state)
    elapsed = time.perf_counter() - started
    tick_started = time.perf_counter()
    due = engine.due(0, tick_at, tick_at)
    tick_s = time.perf_counter() - tick_started
    return {
        "events": len(log),
        "seconds": round(elapsed, 3),
        "events_per_s": round(len(log) / elapsed),
        "overdue_found": len(due),
        "tick_seconds_for_all_overdue": round(tick_s, 4),
    }


def settled_changelog_value(order_id: str, partition: int, user_id: str, settled_at: datetime) -> bytes:
    """The table's changelog value of a credited order: paid a second before `settled_at`, credited, user told."""
    paid_at = settled_at - timedelta(seconds=1)
    state = OrderState(order_id, partition, user_id, 600, "CNY", "card", None, Phase.CREDITED)
    state.paid_at, state.credited_at, state.deadline = paid_at, settled_at, paid_at + timedelta(minutes=2)
    state.settled_at, state.status, state.sequence = settled_at, OrderStatus.CREDITED, 1
    state.history = (("paid", paid_at), ("credited", settled_at), ("status:credited", settled_at))
    return encode_state(state)
