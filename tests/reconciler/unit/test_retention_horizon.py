"""The retention horizon (engine.py): events older than the retention, for orders the table has dropped, are
ignored, and the horizon that says so is kept on the table's changelog (adapters/table.py), so a restarted worker
ignores them too, while it still reconciles a backlog written while it was away."""

from datetime import UTC, datetime, timedelta, tzinfo
from types import SimpleNamespace

import pytest

from contracts.commands import RetryCredit
from reconciler.adapters import ticker
from reconciler.adapters.table import HORIZON_KEY, decode_value, encode_horizon, encode_state, restore_horizons
from reconciler.domain import OrderState, Policy
from reconciler.engine import Engine
from tests.reconciler.unit.fakes import InMemoryOrderStates
from tests.reconciler.unit.worker import Worker, credited, paid

POLICY = Policy(threshold_s=5, retention_s=60)


def retried(worker: Worker, order_id: str) -> bool:
    return any(isinstance(m, RetryCredit) and m.order_id == order_id for _, m in worker.producer.sent)


def test_an_engine_given_its_horizon_back_ignores_an_older_event_for_an_order_it_lacks_but_not_a_newer_one() -> None:
    engine = Engine(InMemoryOrderStates(), POLICY)
    now = datetime.now(UTC)
    engine.restore_horizon(0, now - timedelta(seconds=60))
    assert engine.apply(paid("old", seconds_ago=120), 0, now) is None
    assert engine.apply(paid("new", seconds_ago=30), 0, now) is not None
    assert engine.apply(paid("elsewhere", seconds_ago=120), 1, now) is not None, "a horizon is its partition's own"


def test_a_horizon_read_back_never_moves_a_partitions_horizon_back() -> None:
    engine = Engine(InMemoryOrderStates(), POLICY)
    now = datetime.now(UTC)
    engine.expired(0, now)
    engine.restore_horizon(0, now - timedelta(days=1))
    assert engine.horizon(0) == now - POLICY.retention


def test_a_horizon_on_the_changelog_goes_to_the_engine_and_never_into_the_store() -> None:
    at = datetime.now(UTC).replace(microsecond=123456)
    state = OrderState("ord_1", partition=2)
    records = [("ord_1", encode_state(state), 2), (HORIZON_KEY, encode_horizon(at), 2)]
    events = [
        SimpleNamespace(key=key, value=decode_value(value), message=SimpleNamespace(partition=partition))
        for key, value, partition in records
    ]
    restored: list[tuple[int, datetime]] = []
    kept = restore_horizons(events, lambda partition, when: restored.append((partition, when)))
    assert [e.key for e in kept] == ["ord_1"] and kept[0].value == state
    assert restored == [(2, at)]


async def test_a_round_that_drops_orders_writes_their_partitions_horizon_before_their_tombstones() -> None:
    worker = Worker(POLICY)
    await worker.batch(worker.record(paid("old", seconds_ago=120)), worker.record(credited("old", seconds_ago=119)))
    await worker.tick()
    assert worker.journal.index("horizon 0") < worker.journal.index("tombstone old")
    horizons = [v for k, v, p in worker.changelog.records if k == HORIZON_KEY and p == 0]
    assert [decode_value(v).at for v in horizons if v is not None] == [worker.rounds.engine.horizon(0)]  # type: ignore[union-attr]
    await worker.tick()
    assert worker.journal.count("horizon 0") == 1, "a round that drops nothing writes no horizon"


async def test_a_restarted_worker_ignores_a_late_replay_of_the_payment_of_an_order_it_dropped() -> None:
    worker = Worker(POLICY)
    await worker.batch(worker.record(paid("old", seconds_ago=120)), worker.record(credited("old", seconds_ago=119)))
    await worker.tick()
    assert worker.stored("old") is None
    worker = worker.restarted()
    await worker.batch(worker.record(paid("old", seconds_ago=120)))  # a dead letter replayed after the restart
    await worker.tick()
    await worker.tick()
    assert worker.stored("old") is None and not retried(worker, "old")
    assert worker.statuses("old") == ["credited#1"]


async def test_a_restarted_worker_reconciles_a_backlog_written_while_it_was_away_though_older_than_the_retention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Earlier(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:
            return datetime.now(tz) - timedelta(seconds=200)

    monkeypatch.setattr(ticker, "datetime", Earlier)  # the first worker ran 200 s ago
    worker = Worker(POLICY)
    await worker.batch(worker.record(paid("old", seconds_ago=300)), worker.record(credited("old", seconds_ago=299)))
    await worker.tick()
    assert worker.stored("old") is None
    monkeypatch.undo()
    worker = worker.restarted()  # away for longer than the retention: what came meanwhile is older than it
    await worker.batch(worker.record(paid("away", seconds_ago=120)), worker.record(paid("paid", seconds_ago=110)))
    await worker.batch(worker.record(credited("paid", seconds_ago=100)))
    await worker.tick()
    await worker.tick()
    assert retried(worker, "away"), "an order paid while the worker was away and never credited is flagged"
    assert worker.statuses("paid") == ["credited#1"]
