"""Many records per round trip, and no state written before the broker has what it announces (Batch)."""

from typing import Any

import pytest
from faust.types import TP

from reconciler.adapters.batch import Batch
from reconciler.adapters.commits import ProcessedPositions
from reconciler.adapters.table import FaustOrderStates
from reconciler.domain import OrderState, Phase

PAYMENTS = "payments.events"


class Table(dict[str, Any]):
    """A faust table's mapping side, recording the order of writes."""

    def __init__(self, journal: list[str]) -> None:
        super().__init__()
        self.journal = journal

    def __setitem__(self, key: str, value: Any) -> None:
        self.journal.append(f"table {key}")
        super().__setitem__(key, value)


def setup(journal: list[str], refuse: bool = False) -> tuple[Batch, FaustOrderStates, Table, ProcessedPositions]:
    table = Table(journal)
    states = FaustOrderStates(table)
    positions = ProcessedPositions([PAYMENTS])
    positions.started({TP(PAYMENTS, 0): 10})

    async def announced() -> None:
        journal.append("announcements acknowledged")
        if refuse:
            raise RuntimeError("the broker refused a status change")

    return Batch(states, announced, positions, max_records=3), states, table, positions


def test_a_staged_state_is_what_the_next_record_sees_before_anything_is_written() -> None:
    journal: list[str] = []
    _, states, table, _ = setup(journal)
    states.put(OrderState("o1", partition=0, user_id="u1", amount=600))
    assert states.get("o1") == OrderState("o1", partition=0, user_id="u1", amount=600)
    assert [s.order_id for s in states.values()] == ["o1"]
    assert table == {} and journal == []


async def test_a_flush_waits_for_the_announcements_before_it_writes_the_table() -> None:
    journal: list[str] = []
    batch, states, table, positions = setup(journal)
    states.put(OrderState("o1", partition=0))
    batch.processed(PAYMENTS, 0, 10)
    await batch.flush()
    assert journal == ["announcements acknowledged", "table o1"]
    assert OrderState.from_json(table["o1"]) == OrderState("o1", partition=0)
    assert positions.committable([TP(PAYMENTS, 0)]) == {TP(PAYMENTS, 0): 11}


async def test_several_changes_of_one_order_in_a_batch_leave_one_changelog_record() -> None:
    journal: list[str] = []
    batch, states, _, _ = setup(journal)
    for amount in (1, 2, 3):
        states.put(OrderState("o1", partition=0, amount=amount))
    await batch.flush()
    assert journal == ["announcements acknowledged", "table o1"]
    assert states.get("o1") == OrderState("o1", partition=0, amount=3)


def test_records_of_the_batch_count_as_processed_for_the_hole_check_but_not_for_the_commit() -> None:
    batch, _, _, positions = setup([])
    batch.processed(PAYMENTS, 0, 10)
    batch.processed(PAYMENTS, 0, 11)
    assert batch.missing(PAYMENTS, 0, 12) is None
    assert batch.missing(PAYMENTS, 0, 14) == 12
    assert positions.committable([TP(PAYMENTS, 0)]) == {TP(PAYMENTS, 0): 10}


async def test_a_refused_announcement_writes_nothing_and_reports_nothing() -> None:
    journal: list[str] = []
    batch, states, table, positions = setup(journal, refuse=True)
    states.put(OrderState("o1", partition=0))
    batch.processed(PAYMENTS, 0, 10)
    with pytest.raises(RuntimeError):
        await batch.flush()
    assert table == {}
    assert positions.committable([TP(PAYMENTS, 0)]) == {TP(PAYMENTS, 0): 10}


def test_a_batch_is_full_at_its_record_limit() -> None:
    batch, _, _, _ = setup([])
    for offset in (10, 11):
        batch.processed(PAYMENTS, 0, offset)
    assert not batch.full
    batch.processed(PAYMENTS, 0, 12)
    assert batch.full and batch.records == 3


def test_orders_in_given_phases_are_counted_over_stored_and_staged_states_once_each() -> None:
    journal: list[str] = []
    _, states, table, _ = setup(journal)
    table["o1"] = OrderState("o1", partition=0, phase=Phase.RETRYING).to_json()
    table["o2"] = OrderState("o2", partition=0, phase=Phase.CREDITED).to_json()
    table["o3"] = OrderState("o3", partition=0, phase=Phase.RETRYING).to_json()
    states.put(OrderState("o3", partition=0, phase=Phase.CREDITED))  # staged: credited since
    states.put(OrderState("o4", partition=0, phase=Phase.REFUNDING))
    assert states.count_in((Phase.RETRYING, Phase.REFUNDING)) == 2
