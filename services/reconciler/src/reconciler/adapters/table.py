"""The order-state table: a faust table partitioned like the input topics that holds OrderState objects
themselves (JSON only on its changelog), with the states of the round in progress staged in front of it."""

from collections.abc import Collection, Iterable, Iterator
from typing import Any

import faust
import orjson
from aiokafka.partitioner import DefaultPartitioner
from faust.serializers import codecs
from faust.types import FutureMessage

from reconciler.domain import OrderState, Phase

CODEC = "order-state"
KEY_CODEC = "order-id"
_default_partitioner = DefaultPartitioner()


def encode_state(state: OrderState) -> bytes:
    return orjson.dumps(state)  # orjson writes the slots dataclass, its datetimes and enums itself


def decode_state(raw: bytes) -> OrderState:
    return OrderState.from_json(orjson.loads(raw))


class OrderStateCodec(codecs.Codec):
    """The changelog's value codec: the memory store keeps the decoded objects, so a read costs nothing and a
    state is encoded once, when its changelog record is written."""

    def _dumps(self, obj: Any) -> bytes:
        return encode_state(obj)

    def _loads(self, s: bytes) -> Any:
        return decode_state(s)


class OrderIdCodec(codecs.Codec):
    """The changelog's key codec: the order id's own bytes, as the input topics key it, so faust's router
    (its producer's partitioner on the encoded key) finds the worker that has the order, as
    `OrderTable.partition_for_key` places it. A key written as JSON (a quoted string, before issue 14)
    still reads as the same order id."""

    def _dumps(self, obj: Any) -> bytes:
        return str(obj).encode()

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s) if s[:1] == b'"' else s.decode()


def register_codec() -> None:
    codecs.register(CODEC, OrderStateCodec())
    codecs.register(KEY_CODEC, OrderIdCodec())


class OrderTable(faust.Table):
    """Each order's changelog record goes to its order's partition on the input topics (Kafka's default
    partitioner on the order id), computed here rather than by the producer, so a write needs no event
    context (timers write too) and a worker that takes over a partition restores exactly its orders.
    The futures of the changelog records sent are kept for the round to wait on (rounds.py)."""

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        super().__init__(app, schema=faust.Schema(key_serializer=KEY_CODEC, value_serializer=CODEC), **kwargs)
        # faust takes a table's serializers from its key and value types (JSON for none), for the changelog
        # topic and every write: set before either is made.
        self.key_serializer, self.value_serializer = KEY_CODEC, CODEC
        self.sent: list[FutureMessage] = []

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        sent = super().send_changelog(*args, **kwargs)
        self.sent.append(sent)
        return sent

    def partition_for_key(self, key: Any) -> int | None:
        partitions = list(range(self.partitions or 1))
        partition: int = _default_partitioner(str(key).encode(), partitions, partitions)
        return partition


class FaustOrderStates:
    """OrderStates on the faust table. A state put is staged, visible to every later get, and reaches the
    table (so its changelog) only by `write_staged`, once the broker has acknowledged the announcements the
    state stands for. Several changes of one order in a round leave one changelog record.

    Keys are order ids as str, restored as str (OrderIdCodec)."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._staged: dict[str, OrderState] = {}

    def get(self, order_id: str) -> OrderState | None:
        staged = self._staged.get(order_id)
        return staged if staged is not None else self._table.get(order_id)

    def stored(self, order_id: str) -> OrderState | None:
        """The state in the table, whatever is staged."""
        found: OrderState | None = self._table.get(order_id)
        return found

    def put(self, state: OrderState) -> None:
        self._staged[state.order_id] = state

    def values(self) -> Iterator[OrderState]:
        staged = dict(self._staged)
        for key, state in list(self._table.items()):
            if key not in staged:
                yield state
        yield from staged.values()

    def count_in(self, phases: Collection[Phase]) -> int:
        return sum(1 for state in self.values() if state.phase in phases)

    @property
    def staged(self) -> list[str]:
        return list(self._staged)

    def drop_staged(self) -> list[str]:
        """Forget the round's states (the table keeps the states before it); return their order ids."""
        dropped, self._staged = list(self._staged), {}
        return dropped

    def write_staged(self, expired: Iterable[str] = ()) -> None:
        """Write the round's states to the table, and remove the orders whose retention ended (a tombstone on
        the changelog). The changelog records' futures are in the table's `sent`."""
        staged, self._staged = self._staged, {}
        for order_id, state in staged.items():
            self._table[order_id] = state
        for order_id in expired:
            if order_id not in staged:
                self._table.pop(order_id, None)
