"""Why an order went overdue: its payment reached the reconciler only after the deadline (`payment_late`: a lost
callback that payments' query found late, nothing the credit path could have done), or it came in time and the
credit did not (`credit_missing`). The flag, what the user hears and the retries are the same for both; only what
on-call is told differs (the flagged counter's `cause`, the detection latency, OrdersOverdue)."""

import time
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from contracts.events import PaymentSucceeded
from reconciler.adapters.metrics import PrometheusObservations
from reconciler.domain import Command, CommandKind, FlagCause, Flagged, Policy, StatusChange
from reconciler.engine import Engine
from tests.reconciler.unit.fakes import InMemoryOrderStates
from tests.reconciler.unit.worker import Worker, paid

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
POLICY = Policy(threshold_s=120, retry_attempts=2, retry_backoff_s=2)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def payment() -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id="ord_1", user_id="u1", amount=600, currency="CNY", channel="card", provider="alipay",
        provider_txn_id="tx", paid_at=T0,
    )  # fmt: skip


def flag_after(arrived_s: float, read_s: float, tick_s: float) -> list[object]:
    """The effects of the tick at `tick_s` for a payment made at 0 (deadline 120), appended to payments.events at
    `arrived_s` and read by the reconciler at `read_s`, never credited."""
    engine = Engine(InMemoryOrderStates(), POLICY)
    applied = engine.apply(payment(), 0, s(read_s), arrived_at=s(arrived_s))
    assert applied is not None
    engine.commit(applied[0])
    ((_, effects),) = engine.due(0, s(tick_s), s(tick_s))
    return list(effects)


def test_a_payment_first_seen_after_its_deadline_is_flagged_payment_late_and_timed_from_its_arrival() -> None:
    effects = flag_after(arrived_s=200, read_s=200, tick_s=200.5)
    (flag,) = [e for e in effects if isinstance(e, Flagged)]
    assert flag.cause is FlagCause.PAYMENT_LATE
    assert flag.late_by_s == 80.5, "still flag time minus deadline: how late the user is"
    assert flag.detection_s == 0.5, "the detector could not flag it before the payment arrived"


def test_the_timeline_of_an_order_flagged_for_a_late_payment_says_so() -> None:
    engine = Engine(InMemoryOrderStates(), POLICY)
    applied = engine.apply(payment(), 0, s(200), arrived_at=s(200))
    assert applied is not None
    engine.commit(applied[0])
    ((state, _),) = engine.due(0, s(201), s(201))
    assert [what for what, _ in state.history if what.startswith("flagged")] == ["flagged_overdue:payment_late"]


def test_a_payment_seen_in_time_and_not_credited_is_flagged_credit_missing() -> None:
    effects = flag_after(arrived_s=1, read_s=1, tick_s=121)
    (flag,) = [e for e in effects if isinstance(e, Flagged)]
    assert flag.cause is FlagCause.CREDIT_MISSING
    assert flag.late_by_s == 1 and flag.detection_s == 1


def test_a_payment_appended_in_time_but_read_late_by_the_reconciler_is_credit_missing() -> None:
    """A reconciler catching up (after a restart) reads the payment past its deadline; the ledger could have
    credited it all along, so the credit is what is missing."""
    effects = flag_after(arrived_s=1, read_s=300, tick_s=300)
    (flag,) = [e for e in effects if isinstance(e, Flagged)]
    assert flag.cause is FlagCause.CREDIT_MISSING


def test_a_payment_late_flag_tells_the_user_and_retries_exactly_as_a_credit_missing_one() -> None:
    def shape(effects: list[object]) -> list[object]:
        return [
            (type(e).__name__, e.status.value, e.reason) if isinstance(e, StatusChange) else
            (type(e).__name__, e.kind.value, e.attempt) if isinstance(e, Command) else type(e).__name__
            for e in effects
        ]  # fmt: skip

    late, missing = flag_after(200, 200, 200), flag_after(1, 1, 200)
    assert shape(late) == shape(missing)
    assert ("Command", CommandKind.RETRY_CREDIT.value, 1) in shape(late)


def test_the_flagged_counter_says_the_cause_and_detection_latency_leaves_out_the_wait_for_a_late_payment() -> None:
    observe = PrometheusObservations(CollectorRegistry())
    observe.flagged("card", FlagCause.PAYMENT_LATE.value, 0.5)
    observe.flagged("card", FlagCause.CREDIT_MISSING.value, 1.0)
    flagged = {
        tuple(sorted(sample.labels.items())): sample.value
        for metric in observe.flagged_orders.collect()
        for sample in metric.samples
        if sample.name == "reconciler_overdue_flagged_total"
    }
    assert flagged == {
        (("cause", "credit_missing"), ("channel", "card")): 1.0,
        (("cause", "payment_late"), ("channel", "card")): 1.0,
    }
    (histogram,) = observe.detection.collect()
    total = next(sample.value for sample in histogram.samples if sample.name.endswith("_sum"))
    assert total == 1.5


async def test_a_worker_takes_when_a_payment_arrived_from_its_record_timestamp() -> None:
    """The worker's POLICY threshold is 5 s: one payment made 60 s ago and appended just now (found by query), one
    made 60 s ago and appended a second after it was made, read only now."""
    worker = Worker()
    now = time.time()
    await worker.batch(
        worker.record(paid("found_late", seconds_ago=60), timestamp=now),
        worker.record(paid("read_late", seconds_ago=60), timestamp=now - 59),
    )
    await worker.tick()
    assert worker.statuses("found_late") == worker.statuses("read_late") == ["delayed#1"]
    flagged = {
        sample.labels["cause"]: sample.value
        for metric in worker.observe.flagged_orders.collect()
        for sample in metric.samples
        if sample.name == "reconciler_overdue_flagged_total"
    }
    assert flagged == {"payment_late": 1.0, "credit_missing": 1.0}
