"""The order-state table: a faust table partitioned like the input topics that holds OrderState objects
themselves (JSON only on its changelog), with the states of the round in progress staged in front of it.

Each changelog partition also holds its partition's retention horizon (engine.py), under a key no order id can
be (`HORIZON_KEY`): written in every round that drops orders, before their tombstones, so every order a
restored partition lacks because its retention ended settled before the horizon restored with it. It never
enters the store: the restore hands it to the engine (`OrderTable.restored_horizon`). Compaction keeps the
latest of each partition."""

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import faust
import orjson
from aiokafka.partitioner import DefaultPartitioner
from faust.serializers import codecs

from contracts.events import OrderStatus
from reconciler.domain import OrderState, Phase, note

OVERDUE = (Phase.RETRYING, Phase.BLOCKING, Phase.REFUNDING)


def counts_overdue(state: OrderState) -> bool:
    """Whether the order counts in the overdue gauge: remediated past its credit deadline. Not an order the risk
    team rejected, blocked and refunded on purpose: it was never owed its credit (nor is a hold past its time)."""
    return state.phase in OVERDUE and state.review != "rejected"


CODEC = "order-state"
KEY_CODEC = "order-id"
HORIZON_KEY = "#retention-horizon"
"""The key of a partition's retention horizon on the changelog: an order id has no '#' (contracts.base.OrderId)."""
_HORIZON_FIELD = "retention_horizon"
_default_partitioner = DefaultPartitioner()


@dataclass(frozen=True, slots=True)
class RetentionHorizon:
    """A partition's retention horizon as its changelog record holds it."""

    at: datetime


def encode_state(state: OrderState) -> bytes:
    return orjson.dumps(state)  # orjson writes the slots dataclass, its datetimes and enums itself


def decode_state(raw: bytes) -> OrderState:
    return OrderState.from_json(orjson.loads(raw))


def encode_horizon(at: datetime) -> bytes:
    return orjson.dumps({_HORIZON_FIELD: at})


def decode_value(raw: bytes) -> OrderState | RetentionHorizon:
    """A changelog value: an order's state, or its partition's retention horizon."""
    data = orjson.loads(raw)
    if _HORIZON_FIELD in data:
        return RetentionHorizon(datetime.fromisoformat(data[_HORIZON_FIELD]))
    return OrderState.from_json(data)


class OrderStateCodec(codecs.Codec):
    """The changelog's value codec: the memory store keeps the decoded objects, so a read costs nothing and a
    state is encoded once, when its changelog record is written."""

    def _dumps(self, obj: Any) -> bytes:
        return encode_state(obj)

    def _loads(self, s: bytes) -> Any:
        return decode_value(s)


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
    context (timers write too) and a worker that takes over a partition restores exactly its orders."""

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        super().__init__(app, schema=faust.Schema(key_serializer=KEY_CODEC, value_serializer=CODEC), **kwargs)
        # faust takes a table's serializers from its key and value types (JSON for none), for the changelog
        # topic it restores from: set before it is made.
        self.key_serializer, self.value_serializer = KEY_CODEC, CODEC
        self.restored_horizon: Callable[[int, datetime], None] = lambda partition, at: None

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        """faust's restore of the changelog: the order states to the store, the horizons to `restored_horizon`."""
        super().apply_changelog_batch(restore_horizons(batch, self.restored_horizon))

    def partition_for_key(self, key: Any) -> int | None:
        partitions = list(range(self.partitions or 1))
        partition: int = _default_partitioner(str(key).encode(), partitions, partitions)
        return partition


def restore_horizons(batch: Iterable[Any], restored: Callable[[int, datetime], None]) -> list[Any]:
    """The changelog events of `batch` that hold order states; each horizon among them goes to `restored`, in order."""
    states = []
    for event in batch:
        if isinstance(event.value, RetentionHorizon):
            restored(event.message.partition, event.value.at)
        else:
            states.append(event)
    return states


class SendChangelog(Protocol):
    def __call__(self, key: str, value: bytes | None, partition: int | None = None) -> Awaitable["asyncio.Future[Any]"]:
        """Hand a changelog record (None: a tombstone) to the producer, for its order's partition or the one
        given; the future is the broker's answer."""


class FaustOrderStates:
    """OrderStates on the faust table. A state put is staged, visible to every later get, and reaches the
    table's store and its changelog only by `write_staged`, once the broker has acknowledged the
    announcements the state stands for. Several changes of one order in a round leave one changelog record.

    The round writes the store and sends the changelog records itself, instead of through `table[key] = ...`:
    faust queues each such record in its ProducerBuffer, drained one await at a time, which cost an eighth of
    the worker's time, and hands back a future only through the table's send_changelog. Restoring the table
    (faust's recovery) is faust's as ever; keys are order ids as str (OrderIdCodec)."""

    def __init__(self, store: MutableMapping[str, OrderState], send: SendChangelog) -> None:
        self._store = store
        self._send = send
        self._staged: dict[str, OrderState] = {}
        self._overdue: set[str] = set()

    def get(self, order_id: str) -> OrderState | None:
        staged = self._staged.get(order_id)
        return staged if staged is not None else self._store.get(order_id)

    def stored(self, order_id: str) -> OrderState | None:
        """The state in the table, whatever is staged."""
        return self._store.get(order_id)

    def put(self, state: OrderState) -> None:
        self._staged[state.order_id] = state

    def values(self) -> Iterator[OrderState]:
        staged = dict(self._staged)
        for key, state in list(self._store.items()):
            if key not in staged:
                yield state
        yield from staged.values()

    def recount(self) -> None:
        """Count the overdue orders again from every stored state (after partitions moved)."""
        self._overdue = {s.order_id for s in self._store.values() if counts_overdue(s)}

    def keep(self, partitions: Collection[int]) -> int:
        """Partitions moved: drop the stored states of every partition not in `partitions` (each state knows its
        order's partition, the one its events and its changelog record have) and count the overdue orders again
        from the states kept; return how many were dropped. faust's memory store drops only the states it
        restored itself, not those written here: without this a worker would keep, count and answer for ever
        orders another worker now has."""
        gone, counted = [], set()
        for order_id, state in self._store.items():
            if state.partition not in partitions:
                gone.append(order_id)
            elif counts_overdue(state):
                counted.add(order_id)
        for order_id in gone:
            del self._store[order_id]
        self._overdue = counted
        return len(gone)

    @property
    def size(self) -> int:
        return len(self._store)

    @property
    def overdue(self) -> int:
        """Paid orders past their deadline and not yet credited or refunded (kept as states are written)."""
        return len(self._overdue)

    def drop_staged(self) -> list[str]:
        """Forget the round's states (the table keeps the states before it); return their order ids."""
        dropped, self._staged = list(self._staged), {}
        return dropped

    def remember(
        self, order_id: str, partition: int, statuses: Mapping[int, OrderStatus], at: datetime
    ) -> OrderState | None:
        """Store that an undone round may have left `statuses` of the order on the status topic: a copy of its
        stored state (or a new one, for an order the round met first) with them in `landed`, noted in its history
        (which also lets a new state leave the table a retention later if nothing else comes), returned for the
        caller to write to the changelog (`send`); nothing is staged. None if the stored state knew them already
        (a timer refused round after round repeats its statuses: one record and one note, not one a tick)."""
        stored = self._store.get(order_id)
        state = OrderState(order_id, partition) if stored is None else stored.copy()
        landed = tuple(sorted({**dict(state.landed), **statuses}.items()))
        if stored is not None and landed == stored.landed:
            return None
        state.landed = landed
        note(state, "status_may_have_landed", at)
        self._store[order_id] = state
        return state

    def put_back(self, stored: Mapping[str, OrderState | None]) -> None:
        """Store the states given again (None: the order was not stored), as they were before `remember`."""
        for order_id, state in stored.items():
            if state is None:
                self._store.pop(order_id, None)
            else:
                self._store[order_id] = state

    def staged(self) -> Iterator[OrderState]:
        """The round's states."""
        return iter(self._staged.values())

    async def send(self, state: OrderState) -> "asyncio.Future[Any]":
        """The changelog record of a stored state written outside a round (`remember`)."""
        return await self._send(state.order_id, encode_state(state))

    async def write_staged(
        self, expired: Iterable[str] = (), horizons: Mapping[int, datetime] | None = None
    ) -> list["asyncio.Future[Any]"]:
        """Write the round's states to the table, and remove the orders whose retention ended (a tombstone on
        the changelog) after the `horizons` of their partitions; return the futures of their changelog records."""
        staged, self._staged = self._staged, {}
        sent = []
        for order_id, state in staged.items():
            self._store[order_id] = state
            (self._overdue.add if counts_overdue(state) else self._overdue.discard)(order_id)
            sent.append(await self._send(order_id, encode_state(state)))
        for partition, at in (horizons or {}).items():
            sent.append(await self._send(HORIZON_KEY, encode_horizon(at), partition))
        for order_id in expired:
            if order_id not in staged and self._store.pop(order_id, None) is not None:
                self._overdue.discard(order_id)
                sent.append(await self._send(order_id, None))
        return sent
