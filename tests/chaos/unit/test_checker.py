"""The chaos checker's judging, on histories made by hand: each kind of harm is found, a clean history has none."""

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from harness.chaos.checker import History, judge
from harness.chaos.schedule import Fault, FaultKind, Schedule, ci, full
from harness.chaos.traffic import Ledger

PAID_AT = datetime(2026, 1, 1, tzinfo=UTC)


def order(oid: str, amount: int = 600, user: str = "u1", paid: bool = True) -> dict[str, Any]:
    return {
        "order_id": oid,
        "user_id": user,
        "amount": amount,
        "currency": "CNY",
        "payment_status": "succeeded" if paid else "pending",
        "status": "paid",
        "paid_at": PAID_AT if paid else None,
    }


def credit(oid: str, amount: int = 600, user: str = "u1", tx: str = "") -> dict[str, Any]:
    return {
        "order_id": oid,
        "transaction_id": tx or f"tx-{oid}",
        "kind": "credit",
        "user_id": user,
        "amount": amount,
        "currency": "CNY",
    }


def told(oid: str, status: str) -> dict[str, Any]:
    return {"order_id": oid, "status": status, "notification_id": f"n-{oid}-{status}"}


def history(
    orders: list[dict[str, Any]],
    credits: list[dict[str, Any]],
    notified: list[dict[str, Any]],
    refunds: list[dict[str, Any]] | None = None,
    wallet: int | None = None,
    deliveries: dict[str, int] | None = None,
) -> History:
    truth = Ledger(orders={o["order_id"]: {} for o in orders}, paid={o["order_id"] for o in orders if o["paid_at"]})
    balance = sum(c["amount"] for c in credits) if wallet is None else wallet
    expected = sum(o["amount"] for o in orders if any(c["order_id"] == o["order_id"] for c in credits))
    return History(
        truth=truth,
        orders=orders,
        refunds=refunds or [],
        credits=credits,
        wallets=[
            {"user_id": "u1", "currency": "CNY", "balance": balance, "entries_sum": balance, "expected": expected}
        ],
        notified=notified,
        deliveries=deliveries or {n["notification_id"]: 1 for n in notified},
        dead_letters=Counter(),
    )


def counts(result: dict[str, Any]) -> dict[str, int]:
    return {name: found["count"] for name, found in result["findings"].items() if found["count"]}


def test_a_history_where_every_paid_order_is_credited_once_and_told_once_has_no_finding() -> None:
    result = judge(
        history([order("a"), order("b")], [credit("a"), credit("b")], [told("a", "credited"), told("b", "credited")])
    )
    assert counts(result) == {} and result["ok"]
    assert (result["paid"], result["credited"], result["refunded"]) == (2, 2, 0)


def test_a_lost_order_a_mistaken_refund_and_an_untold_user_are_each_found() -> None:
    result = judge(
        history(
            [order("lost"), order("refunded"), order("quiet")],
            [credit("quiet")],
            [told("refunded", "refunded")],
            refunds=[{"order_id": "refunded", "status": "succeeded", "reason": "credit failed"}],
        )
    )
    assert counts(result) == {
        "lost (paid, never credited nor refunded)": 1,
        "refunded by mistake": 1,
        "user not told the final status": 2,  # lost, quiet
        "audit: missing_credit": 1,
    }
    assert result["findings"]["refunded by mistake"]["examples"] == ["refunded"]


def test_credited_and_refunded_contradicting_news_and_a_second_delivery_are_found() -> None:
    notified = [told("a", "credited"), told("a", "refunded")]
    result = judge(
        history(
            [order("a")],
            [credit("a")],
            notified,
            refunds=[{"order_id": "a", "status": "succeeded", "reason": "x"}],
            deliveries={"n-a-credited": 2, "n-a-refunded": 1},
        )
    )
    found = counts(result)
    assert found["credited and refunded"] == 1 and found["audit: credited_and_refunded"] == 1
    assert found["user told contradicting statuses"] == 1
    assert found["notification delivered more than once"] == 1 and result["duplicate_deliveries"] == 1


def test_a_wallet_that_does_not_hold_what_was_credited_and_a_double_credit_are_found() -> None:
    result = judge(
        history([order("a")], [credit("a", tx="t1"), credit("a", tx="t2")], [told("a", "credited")], wallet=1200)
    )
    found = counts(result)
    assert found["credited twice"] == 1 and found["audit: credited_twice"] == 1
    assert found["wallet differs from its credits"] == 1


def test_an_order_the_provider_was_told_is_paid_but_payments_never_recorded_is_found() -> None:
    h = history([order("a", paid=False)], [], [])
    h.truth.paid.add("a")
    assert counts(judge(h))["paid at the provider, not paid in payments"] == 1


def test_the_full_schedule_has_the_faults_the_issue_asks_for_and_ci_a_short_one() -> None:
    plan = full()
    assert plan.orders == 10_000
    kinds = Counter(f.kind for f in plan.faults)
    assert kinds[FaultKind.BROKER_RESTART] >= 2 and kinds[FaultKind.POSTGRES_RESTART] >= 2
    assert kinds[FaultKind.READ_ONLY] >= 1 and kinds[FaultKind.DISK_FULL] >= 1
    assert all(
        Counter(f.target for f in plan.faults if f.kind is FaultKind.KILL)[s] >= 3
        for s in ("payments", "ledger", "reconciler", "notifier")
    )
    span = plan.orders / plan.rate
    assert all(f.at_s + f.duration_s < span for f in plan.faults), "every fault happens under traffic"
    short = Counter(f.label for f in ci().faults)
    assert short == Counter(
        ["broker_restart", "postgres_restart", "kill payments", "kill ledger", "kill reconciler", "kill notifier"]
    )


def test_a_schedule_round_trips_through_json_and_refuses_nonsense() -> None:
    plan = full(orders=4000, rate=10)
    assert Schedule.from_json(plan.to_json()) == plan
    with pytest.raises(ValueError, match="overlap"):
        Schedule("x", 10, 1, (Fault(1, FaultKind.READ_ONLY, "", 5), Fault(3, FaultKind.BROKER_RESTART, "", 5)))
    with pytest.raises(ValueError):
        Fault(1, FaultKind.KILL, "postgres")
    with pytest.raises(ValueError):
        Fault(1, FaultKind.DISK_FULL)
    assert {f.kind for f in plan.only({FaultKind.KILL}).faults} == {FaultKind.KILL}
