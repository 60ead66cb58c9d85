"""The pure rules of support cases: severity steps, listing order, and what each act does and records."""

from datetime import UTC, datetime, timedelta

import pytest

from contracts.events import CaseKind, CaseSeverity
from payments import cases
from payments.cases import Case, CaseAction, CaseResolved

OPENED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
NOW = OPENED + timedelta(minutes=30)


def case(severity: CaseSeverity = CaseSeverity.PAGE, opened_at: datetime = OPENED, case_id: int = 1) -> Case:
    return Case(case_id, "ord_1", "u1", CaseKind.NEEDS_SUPPORT, severity, "refund failed", opened_at)


def test_severity_steps_warning_to_page_to_critical_and_no_further() -> None:
    assert cases.next_severity(CaseSeverity.WARNING) is CaseSeverity.PAGE
    assert cases.next_severity(CaseSeverity.PAGE) is CaseSeverity.CRITICAL
    assert cases.next_severity(CaseSeverity.CRITICAL) is None


def test_cases_are_listed_critical_first_then_oldest_first() -> None:
    young_critical = case(CaseSeverity.CRITICAL, OPENED + timedelta(hours=2), 1)
    old_warning = case(CaseSeverity.WARNING, OPENED - timedelta(days=1), 2)
    old_page = case(CaseSeverity.PAGE, OPENED, 3)
    young_page = case(CaseSeverity.PAGE, OPENED + timedelta(hours=1), 4)
    listed = cases.ordered([old_warning, young_page, young_critical, old_page])
    assert [c.id for c in listed] == [1, 3, 4, 2]


def test_acknowledging_makes_the_caller_owner_unless_the_case_has_one() -> None:
    acknowledged, entry = cases.acknowledge(case(), "alice", "looking", NOW)
    assert (acknowledged.owner, acknowledged.acknowledged_by, acknowledged.acknowledged_at) == ("alice", "alice", NOW)
    assert (entry.actor, entry.action, entry.detail) == ("alice", CaseAction.ACKNOWLEDGED, "looking")
    assigned, _ = cases.assign(case(), "lead", "bob", NOW)
    by_alice, _ = cases.acknowledge(assigned, "alice", None, NOW)
    assert (by_alice.owner, by_alice.acknowledged_by) == ("bob", "alice")


def test_a_second_acknowledgement_keeps_the_first_ones_time_and_name() -> None:
    first, _ = cases.acknowledge(case(), "alice", None, NOW)
    later = NOW + timedelta(minutes=5)
    second, entry = cases.acknowledge(first, "bob", None, later)
    assert (second.acknowledged_by, second.acknowledged_at, second.owner) == ("alice", NOW, "alice")
    assert (entry.actor, entry.at) == ("bob", later)


def test_a_resolved_case_refuses_acknowledge_assign_and_resolve_but_takes_notes() -> None:
    resolved, entry = cases.resolve(case(), "alice", "refunded by hand", NOW)
    assert (resolved.resolved_by, resolved.resolution, entry.action) == (
        "alice",
        "refunded by hand",
        CaseAction.RESOLVED,
    )
    with pytest.raises(CaseResolved):
        cases.acknowledge(resolved, "bob", None, NOW)
    with pytest.raises(CaseResolved):
        cases.assign(resolved, "bob", "carol", NOW)
    with pytest.raises(CaseResolved):
        cases.resolve(resolved, "bob", "again", NOW)
    noted, line = cases.note(resolved, "bob", "the user confirmed", NOW)
    assert noted == resolved and (line.action, line.detail) == (CaseAction.NOTED, "the user confirmed")


def test_a_case_ages_until_it_resolves() -> None:
    assert case().age_s(NOW) == (NOW - OPENED).total_seconds()
    resolved, _ = cases.resolve(case(), "alice", "done", NOW)
    assert resolved.age_s(NOW + timedelta(hours=5)) == (NOW - OPENED).total_seconds()
