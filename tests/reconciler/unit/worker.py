"""A reconciler worker's rounds and ticker on fakes of faust's table, producer and the broker's offsets: what
the unit tests of the adapters drive. Every write and send is journaled, so a test can check their order."""

import asyncio
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from faust.types import TP
from prometheus_client import CollectorRegistry

from contracts.base import Message
from contracts.codec import decode, encode, envelope_for
from contracts.events import CreditPosted, CreditRejected, PaymentSucceeded
from reconciler.adapters.announcer import KafkaAnnouncer
from reconciler.adapters.metrics import PrometheusObservations
from reconciler.adapters.positions import ProcessedPositions
from reconciler.adapters.rewind import Rewinder, TailWatch
from reconciler.adapters.rounds import Rounds
from reconciler.adapters.table import HORIZON_KEY, FaustOrderStates, decode_value, restore_horizons
from reconciler.adapters.ticker import Ticker
from reconciler.domain import OrderState, Policy
from reconciler.engine import Engine
from reconciler.watermarks import Watermarks

PAYMENTS, LEDGER = "payments.events", "ledger.events"
INPUTS = (PAYMENTS, LEDGER)
TOPICS = {
    "status": "orders.status",
    "ledger": "ledger.commands",
    "payments": "payments.commands",
    "cases": "support.cases",
}
DEAD_LETTERS = "credited.deadletter"
POLICY = Policy(threshold_s=5)


def done(journal: list[str], what: str, error: BaseException | None = None) -> "asyncio.Future[Any]":
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    if error is None:
        journal.append(what)
        future.set_result(None)
    else:
        journal.append(f"refused {what}")
        future.set_exception(error)
    return future


class Changelog:
    """The changelog records the rounds send, acknowledged at once (or refused, when `refuse` is set)."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.refuse = False
        self.hold = False  # leave the records unacknowledged (in `held`) until the test answers them
        self.held: list[asyncio.Future[Any]] = []
        self.records: list[tuple[str, bytes | None, int]] = []  # (key, value, partition), as the broker keeps them

    async def send(self, key: str, value: bytes | None, partition: int | None = None) -> "asyncio.Future[Any]":
        if key == HORIZON_KEY:
            what = f"horizon {partition}"
        else:
            what = f"changelog {key}" if value is not None else f"tombstone {key}"
        if not self.refuse:
            self.records.append((key, value, 0 if partition is None else partition))
        if self.hold:
            self.held.append(asyncio.get_running_loop().create_future())
            return self.held[-1]
        return done(self.journal, what, KafkaError("refused") if self.refuse else None)


@dataclass
class Producer:
    """faust's producer: `send` hands a record over; the future is the broker's answer."""

    journal: list[str]
    sent: list[tuple[str, Message]] = field(default_factory=list)
    dead: list[tuple[bytes, dict[str, bytes]]] = field(default_factory=list)
    refuse_next: int = 0

    async def send(self, topic: str, key: bytes, value: bytes, partition: Any, ts: Any, headers: Any) -> Any:
        if topic == DEAD_LETTERS:
            self.dead.append((value, dict(headers)))
            return done(self.journal, f"dead letter {key.decode()}")
        message, _ = decode(value, headers)
        what = f"{message.event_type} {message.order_id}"
        if self.refuse_next:
            self.refuse_next -= 1
            return done(self.journal, what, KafkaError("NOT_ENOUGH_REPLICAS"))
        self.sent.append((topic, message))
        return done(self.journal, what)


class Offsets:
    """The broker's offsets: end offsets as set, nothing committed, and the offsets that hand over no record (a
    transaction's markers) in `unreadable`."""

    def __init__(self) -> None:
        self.ends: dict[tuple[str, int], int] = {}
        self.unreadable: set[tuple[str, int, int]] = set()
        self.asked: list[tuple[str, int, int, int]] = []

    async def first_readable(self, topic: str, partition: int, offset: int, limit: int) -> int | None:
        self.asked.append((topic, partition, offset, limit))
        while offset < limit and (topic, partition, offset) in self.unreadable:
            offset += 1
        return offset

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.ends.get((tp.topic, tp.partition), 0) for tp in tps}

    async def committed(self, group: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)


class Worker:
    """Rounds and a ticker on fakes, partition 0 of both inputs assigned and started at offset 0."""

    def __init__(self, policy: Policy = POLICY, store: MutableMapping[str, OrderState] | None = None) -> None:
        self.policy = policy
        self.journal: list[str] = []
        self.table: MutableMapping[str, OrderState] = {} if store is None else store  # faust's store
        self.changelog = Changelog(self.journal)
        self.states = FaustOrderStates(self.table, self.changelog.send)
        self.producer = Producer(self.journal)
        self.positions = ProcessedPositions(INPUTS)
        self.positions.started({TP(PAYMENTS, 0): 0, TP(LEDGER, 0): 0})
        self.seeks: list[tuple[str, int, int]] = []
        self.watermarks = Watermarks(INPUTS)
        self.observe = PrometheusObservations(CollectorRegistry())
        unbuildable = self.observe.dead_letters.labels("unbuildable").inc
        self.offsets = Offsets()
        self.rounds = Rounds(
            engine=Engine(self.states, policy),
            states=self.states,
            announcer=KafkaAnnouncer(TOPICS, DEAD_LETTERS, unbuildable),
            observe=self.observe,
            positions=self.positions,
            watermarks=self.watermarks,
            rewinder=Rewinder(self._seek, time.monotonic),
            producer=self.producer,
            dead_letters=DEAD_LETTERS,
            group="group",
            first_readable=self.offsets.first_readable,
        )
        app = SimpleNamespace(
            rebalancing=False,
            in_recovery=False,
            should_stop=False,
            conf=SimpleNamespace(id="group"),
            consumer=SimpleNamespace(assignment=lambda: {TP(PAYMENTS, 0), TP(LEDGER, 0)}),
        )
        tail = TailWatch(
            Rewinder(self._seek, time.monotonic),
            time.monotonic,
            lambda: False,
            self._give_up,
            past_unreadable=self.rounds.past_unreadable,
        )
        self.ticker = Ticker(app, INPUTS, self.rounds, self.watermarks, self.offsets, tail, 0.1)  # type: ignore[arg-type]
        self.next = {PAYMENTS: 0, LEDGER: 0}

    def restarted(self) -> "Worker":
        """A new worker process in this one's place: its table restored from this one's changelog as faust
        restores it, started at this one's committed positions, its producer's records kept."""
        again = Worker(self.policy)
        events = [
            SimpleNamespace(key=key, value=None if value is None else decode_value(value),
                            message=SimpleNamespace(partition=partition, value=value))
            for key, value, partition in self.changelog.records
        ]  # fmt: skip
        for event in restore_horizons(events, again.rounds.engine.restore_horizon):
            if event.value is None:
                again.table.pop(event.key, None)
            else:
                again.table[event.key] = event.value
        again.changelog.records = list(self.changelog.records)
        again.producer.sent = list(self.producer.sent)
        again.next = dict(self.next)
        tps = [TP(topic, 0) for topic in INPUTS]
        again.positions.forget(tps)
        again.positions.started({tp: self.positions.next_offset(tp.topic, 0) for tp in tps})
        return again

    async def _seek(self, topic: str, partition: int, offset: int, why: str) -> None:
        self.seeks.append((topic, partition, offset))

    def _give_up(self, topic: str, partition: int, offset: int) -> None:
        raise AssertionError(f"{topic}[{partition}] stuck at {offset}")

    def record(
        self,
        message: Message,
        topic: str | None = None,
        offset: int | None = None,
        value: Any = None,
        timestamp: float | None = None,
    ) -> Any:
        """A faust event for `message` at the next offset of its topic (or the offset given), appended now (or at
        `timestamp`, in seconds since the epoch, as faust gives a record's timestamp)."""
        topic = topic or (LEDGER if isinstance(message, CreditPosted | CreditRejected) else PAYMENTS)
        at = self.next[topic] if offset is None else offset
        self.next[topic] = max(self.next[topic], at + 1)
        encoded = encode(message, envelope_for(message, producer="test"))
        msg = SimpleNamespace(
            topic=topic,
            partition=0,
            offset=at,
            key=encoded.key,
            headers=encoded.headers,
            value=encoded.value,
            timestamp=time.time() if timestamp is None else timestamp,
        )
        return SimpleNamespace(message=msg, value=encoded.value if value is None else value)

    async def batch(self, *events: Any) -> None:
        await self.rounds.records(list(events))

    async def tick(self) -> None:
        self.offsets.ends = {(t, 0): self.next[t] for t in INPUTS}
        await self.ticker.tick()

    def stored(self, order_id: str) -> OrderState | None:
        found: OrderState | None = self.table.get(order_id)
        return found

    def statuses(self, order_id: str) -> list[str]:
        return [
            f"{m.status.value}#{m.sequence}"  # type: ignore[attr-defined]
            for topic, m in self.producer.sent
            if topic == TOPICS["status"] and m.order_id == order_id
        ]


def refused(order_id: str, seconds_ago: float = 0.0) -> CreditRejected:
    """The ledger's final refusal of the order's credit (a frozen wallet)."""
    return CreditRejected(
        order_id=order_id, user_id="u1", reason="wallet frozen", final=True,
        rejected_at=datetime.now(UTC) - timedelta(seconds=seconds_ago),
    )  # fmt: skip


T0 = datetime.now(UTC).replace(microsecond=0)


def paid(order_id: str, seconds_ago: float = 0.0) -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id=order_id, user_id="u1", amount=600, currency="CNY", channel="card", provider="sim",
        provider_txn_id=f"tx-{order_id}", paid_at=datetime.now(UTC) - timedelta(seconds=seconds_ago),
    )  # fmt: skip


def credited(order_id: str, seconds_ago: float = 0.0) -> CreditPosted:
    return CreditPosted(
        order_id=order_id, user_id="u1", amount=600, currency="CNY", transaction_id=f"t-{order_id}",
        credited_at=datetime.now(UTC) - timedelta(seconds=seconds_ago),
    )  # fmt: skip
