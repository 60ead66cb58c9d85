"""The ticker follows the consumer's assignment: a partition handed over again between two ticks (it
went to another worker and came back, with states this worker never timed) gets its timers rebuilt."""

import asyncio
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from faust.types import TP
from prometheus_client import CollectorRegistry

from contracts.events import OrderStatus, PaymentSucceeded
from reconciler.adapters.batch import Batch
from reconciler.adapters.commits import ProcessedPositions
from reconciler.adapters.faust_app import Ticker
from reconciler.adapters.metrics import PrometheusObservations
from reconciler.adapters.rewind import Rewinder, TailWatch
from reconciler.adapters.table import FaustOrderStates
from reconciler.domain import Command, OrderState, Policy, StatusChange
from reconciler.engine import Engine
from reconciler.watermarks import Watermarks

PAYMENTS, LEDGER = "payments.events", "ledger.events"
INPUTS = (PAYMENTS, LEDGER)
POLICY = Policy(threshold_s=5)


class Offsets:
    """The broker's offsets: nothing appended past what was committed."""

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    async def committed(self, group: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)


class Announcements:
    def __init__(self) -> None:
        self.statuses: list[tuple[str, OrderStatus]] = []

    async def status(self, state: OrderState, change: StatusChange) -> None:
        self.statuses.append((state.order_id, change.status))

    async def command(self, state: OrderState, command: Command) -> None:
        return None

    async def acknowledged(self) -> None:
        return None


def paid_elsewhere(order_id: str, seconds_ago: float) -> dict[str, Any]:
    """The stored state of an order another worker took the payment of, its deadline passed."""
    now = datetime.now(UTC)
    payment = PaymentSucceeded(
        order_id=order_id,
        user_id="u1",
        amount=600,
        currency="CNY",
        channel="card",
        provider="sim",
        provider_txn_id="tx1",
        paid_at=now - timedelta(seconds=seconds_ago),
    )
    result = Engine(FaustOrderStates({}), POLICY).apply(payment, 0, now - timedelta(seconds=seconds_ago))
    assert result is not None
    return result[0].to_json()


def ticker_on(table: dict[str, Any], announcements: Announcements) -> Ticker:
    states = FaustOrderStates(table)
    engine = Engine(states, POLICY)
    positions = ProcessedPositions(INPUTS)
    observe = PrometheusObservations(CollectorRegistry())
    app = SimpleNamespace(
        rebalancing=False,
        in_recovery=False,
        conf=SimpleNamespace(id="group"),
        consumer=SimpleNamespace(assignment=lambda: {TP(PAYMENTS, 0), TP(LEDGER, 0)}),
    )

    class Clock:
        def now(self) -> float:
            return datetime.now(UTC).timestamp()

    deps = {"engine": engine, "announcer": announcements, "observe": observe, "clock": Clock()}
    batch = Batch(states, announcements.acknowledged, positions)
    tail = TailWatch(Rewinder(no_seek, time.monotonic), time.monotonic, lambda: False, give_up)
    return Ticker(
        app, INPUTS, engine, states, Watermarks(INPUTS), Offsets(), observe, deps, 0.1, asyncio.Lock(), batch, tail
    )  # type: ignore[arg-type]


async def no_seek(topic: str, partition: int, offset: int, why: str) -> None:
    raise AssertionError("nothing was appended, so nothing is read again")


def give_up(topic: str, partition: int, offset: int) -> None:
    raise AssertionError("nothing was appended, so no partition is stuck")


async def test_a_partition_handed_over_again_between_two_ticks_has_its_timers_rebuilt_from_the_table() -> None:
    table: dict[str, Any] = {}
    announcements = Announcements()
    ticker = ticker_on(table, announcements)
    await ticker.tick()  # partition 0 is new: its (empty) timers are built
    table["o1"] = paid_elsewhere("o1", seconds_ago=30)  # written by the worker that had it meanwhile
    ticker.handed({TP(PAYMENTS, 0), TP(LEDGER, 0)})
    await ticker.tick()
    await ticker.tick()  # the first tick after the assignment only samples the end offsets
    assert ("o1", OrderStatus.DELAYED) in announcements.statuses


async def test_without_a_new_assignment_a_state_that_appears_in_the_table_is_not_timed() -> None:
    """The premise of the test above: the timers come from the rebuild, not from reading the table."""
    table: dict[str, Any] = {}
    announcements = Announcements()
    ticker = ticker_on(table, announcements)
    await ticker.tick()
    table["o1"] = paid_elsewhere("o1", seconds_ago=30)
    await ticker.tick()
    await ticker.tick()
    assert announcements.statuses == []
