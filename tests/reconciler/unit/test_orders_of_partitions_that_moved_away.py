"""A worker keeps, counts and answers for the orders of the partitions it has, and only those. faust's memory store
drops at a rebalance only the states it restored from the changelog, never those the worker's rounds wrote, so the
ticker drops the states of every partition no longer assigned and counts the overdue orders again at every
reassignment: otherwise reconciler_orders_overdue keeps counting orders another worker now has (OrdersOverdue pages
on a healthy stack, the overdue count doubles), and the timeline page answers what this worker had of them."""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from reconciler.adapters import faust_app
from reconciler.adapters.table import OrderTable
from reconciler.config import Settings
from reconciler.domain import OrderState, Phase
from servicekit.identity import Scope
from tests.reconciler.unit.worker import LEDGER, PAYMENTS, Worker, paid


def faust_memory_store() -> Any:
    """The store faust gives the reconciler's table ("store": "memory://", faust_app.faust_options)."""
    app = faust.App("partitions-moved-away", broker="kafka://127.0.0.1:1", store="memory://")
    return app.Table("order-state", default=None, partitions=1).data


def assignment(*partitions: int) -> SimpleNamespace:
    """The consumer, with these partitions of both input topics."""
    return SimpleNamespace(assignment=lambda: {TP(topic, p) for topic in (PAYMENTS, LEDGER) for p in partitions})


def overdue_elsewhere(order_id: str, partition: int) -> OrderState:
    """An overdue order of `partition`, as its changelog restores it."""
    return OrderState(order_id, partition, "u1", 600, "CNY", "card", phase=Phase.RETRYING)


async def test_a_worker_whose_partition_moved_away_no_longer_counts_that_partitions_overdue_orders() -> None:
    store = faust_memory_store()
    worker = Worker(store=store)
    await worker.batch(worker.record(paid("o1", seconds_ago=30)))
    await worker.tick()
    assert worker.stored("o1").phase is Phase.RETRYING  # type: ignore[union-attr]
    assert worker.observe.overdue_now._value.get() == 1

    # The partition goes to another worker: faust's recovery completes with no active partition here.
    worker.ticker.app.consumer = assignment()
    await store.on_recovery_completed(set(), set())
    await worker.tick()
    assert worker.watermarks.partitions == set(), "the ticker saw the partition go"
    assert worker.stored("o1") is None, "the state written here left with the partition"
    assert worker.observe.overdue_now._value.get() == 0
    assert worker.observe.table_orders._value.get() == 0


async def test_the_orders_of_the_partitions_a_worker_keeps_stay_when_another_partition_moves_away() -> None:
    worker = Worker()
    worker.ticker.app.consumer = assignment(0, 1)
    worker.table["o2"] = overdue_elsewhere("o2", partition=1)  # restored: partition 1 was just assigned here
    await worker.batch(worker.record(paid("o1", seconds_ago=30)))
    await worker.tick()
    assert worker.observe.overdue_now._value.get() == 2

    worker.ticker.app.consumer = assignment(0)  # partition 1 goes to another worker, partition 0 stays
    worker.ticker.handed({TP(PAYMENTS, 0), TP(LEDGER, 0)})
    await worker.tick()
    assert worker.stored("o2") is None and worker.stored("o1") is not None
    assert worker.observe.overdue_now._value.get() == 1


class Everyone:
    async def authenticate(self, key: str) -> object:
        return SimpleNamespace(scopes=frozenset(Scope), name="support")


async def test_the_timeline_of_an_order_whose_partition_moved_away_is_not_answered_from_what_this_worker_had(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RECONCILER_PEER_SECRET", "x" * 40)
    app = faust_app.build_app(Settings(), CollectorRegistry(), Everyone())  # type: ignore[arg-type]
    table = next(t for t in app.tables.values() if isinstance(t, OrderTable))
    table.data["ord_1"] = overdue_elsewhere("ord_1", table.partition_for_key("ord_1") or 0)
    here = {TP(table.changelog_topic.get_topic_name(), table.partition_for_key("ord_1"))}
    monkeypatch.setattr(app.assignor, "assigned_actives", lambda: here)
    monkeypatch.setattr(faust_app, "_owner", lambda app, table, order_id: None)  # the group's metadata lags
    view = app.web.views["/v1/orders/{order_id}/timeline"]
    request = SimpleNamespace(
        method="GET", match_info={"order_id": "ord_1"}, query={}, headers={"Authorization": "Bearer k"}
    )
    answered = await view.dispatch(request)
    assert answered.status == 200 and b"retrying" in answered.body, "the order's partition is here"

    here.clear()  # the partition moves to another worker
    moved = await view.dispatch(request)
    assert moved.status == 503 and b"not_ready" in moved.body, moved.body
