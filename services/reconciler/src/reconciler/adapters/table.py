"""The order-state table: a faust table partitioned like the input topics, with the states of the
records handled since the last flush staged in front of it (batch.py)."""

from collections.abc import Collection, Iterator
from typing import Any

import faust
from aiokafka.partitioner import DefaultPartitioner
from faust.types import FutureMessage

from reconciler.adapters.commits import ChangelogAcks
from reconciler.domain import OrderState, Phase

_default_partitioner = DefaultPartitioner()


class OrderTable(faust.Table):
    """The order-state table. Each order's changelog record goes to its order's partition on the input
    topics (Kafka's default partitioner on the order id), computed here rather than by the producer, so
    a write needs no event context (timers write too) and no producer metadata, and a worker that takes
    over a partition restores exactly the orders of that partition. Every changelog record is tracked
    until the broker acknowledges it: no input offset is committed before that (commits.py)."""

    def __init__(self, app: faust.App, *, acks: ChangelogAcks, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._acks = acks

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        sent = super().send_changelog(*args, **kwargs)
        self._acks.track(sent)
        return sent

    def partition_for_key(self, key: Any) -> int | None:
        partitions = list(range(self.partitions or 1))
        partition: int = _default_partitioner(str(key).encode(), partitions, partitions)
        return partition


class FaustOrderStates:
    """OrderStates on the faust table. A state put is staged, visible to every later get, and written to
    the table (so to its changelog) only by `write_staged`, which the batch calls once the broker has
    acknowledged the announcements the state stands for. Several changes of one order in a batch leave
    one changelog record.

    Keys are order ids as str, JSON-encoded on the changelog so that a restored key is the same str as a
    key written live (raw keys come back as bytes, and a worker that took over a partition would not
    find the state it had just restored).
    """

    def __init__(self, table: faust.Table) -> None:
        self._table = table
        self._staged: dict[str, OrderState] = {}

    def get(self, order_id: str) -> OrderState | None:
        staged = self._staged.get(order_id)
        if staged is not None:
            return staged
        raw = self._table.get(order_id)
        return None if raw is None else OrderState.from_json(raw)

    def put(self, state: OrderState) -> None:
        self._staged[state.order_id] = state

    def values(self) -> Iterator[OrderState]:
        staged = dict(self._staged)
        for key, raw in list(self._table.items()):
            if key not in staged:
                yield OrderState.from_json(raw)
        yield from staged.values()

    def count_in(self, phases: Collection[Phase]) -> int:
        """Orders in one of `phases`, read from the stored JSON without rebuilding every state."""
        wanted = {phase.value for phase in phases}
        staged = self._staged
        count = sum(1 for state in staged.values() if state.phase in phases)
        for key, raw in list(self._table.items()):
            if key not in staged and raw.get("phase") in wanted:
                count += 1
        return count

    @property
    def staged(self) -> int:
        return len(self._staged)

    def drop_staged(self) -> None:
        self._staged = {}

    def write_staged(self) -> None:
        staged, self._staged = self._staged, {}
        for order_id, state in staged.items():
            self._table[order_id] = state.to_json()
