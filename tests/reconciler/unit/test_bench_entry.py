"""The reconciler's bench entry point (reconciler.bench), the only reconciler code the benchmarks import: its
engine run and its changelog value must be the reconciler's own, not a look-alike."""

from datetime import UTC, datetime, timedelta

from contracts.events import CreditPosted, OrderStatus, PaymentSucceeded
from harness.bench.reconciler import event_log
from reconciler.adapters.table import decode_state
from reconciler.bench import engine_throughput, settled_changelog_value
from reconciler.domain import Phase

T0 = datetime(2026, 11, 22, tzinfo=UTC)


def test_the_engine_run_finds_overdue_exactly_the_paid_orders_whose_credit_never_came() -> None:
    log = event_log(400, loss=0.2, dup=0.1, seed=3, t0=T0)
    paid = {m.order_id for m in log if isinstance(m, PaymentSucceeded)}
    credited = {m.order_id for m in log if isinstance(m, CreditPosted)}

    figures = engine_throughput(log, threshold_s=120, now=T0, tick_at=T0 + timedelta(hours=1))

    assert figures["events"] == len(log)
    assert figures["overdue_found"] == len(paid - credited) > 0


def test_no_order_is_overdue_before_its_threshold_has_passed() -> None:
    log = event_log(50, loss=0.5, t0=T0)

    figures = engine_throughput(log, threshold_s=120, now=T0, tick_at=T0 + timedelta(seconds=60))

    assert figures["overdue_found"] == 0


def test_a_settled_changelog_value_is_what_the_table_restores_as_a_credited_order() -> None:
    settled_at = T0 + timedelta(minutes=5)

    state = decode_state(settled_changelog_value("ord_1", 4, "u1", settled_at))

    assert (state.order_id, state.partition, state.user_id) == ("ord_1", 4, "u1")
    assert (state.phase, state.status, state.settled_at, state.credited_at) == (
        Phase.CREDITED,
        OrderStatus.CREDITED,
        settled_at,
        settled_at,
    )
