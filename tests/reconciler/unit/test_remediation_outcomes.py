"""How remediation steps ended, counted when the reconciler learns it from the events it joins: through the
real use cases into the real Prometheus metrics, once per order and outcome however often events repeat."""

from prometheus_client import CollectorRegistry

from contracts.base import Message
from contracts.events import RefundFailed, RefundSucceeded
from reconciler.adapters.metrics import PrometheusObservations, Tally
from reconciler.domain import CaseOpened, Command, OrderState, Policy, StatusChange
from reconciler.engine import Engine
from reconciler.handlers import handle_event, handle_tick
from tests.reconciler.unit.fakes import InMemoryOrderStates
from tests.reconciler.unit.test_join import credited, paid, rejected, s

POLICY = Policy(threshold_s=120, retry_attempts=2, retry_backoff_s=2)
ACTIONS = ("RetryCredit", "BlockCredit", "IssueRefund", "GrantCompensation")
OUTCOMES = ("requested", "succeeded", "failed", "escalated")
REASONS = ("refund_failed", "credited_after_refund")


class Sent:
    def status(self, state: OrderState, change: StatusChange) -> None:
        pass

    def command(self, state: OrderState, command: Command) -> None:
        pass

    def case(self, state: OrderState, case: CaseOpened) -> None:
        pass


class Reconciler:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.observe = PrometheusObservations(self.registry)
        self.engine = Engine(InMemoryOrderStates(), POLICY)

    def event(self, message: Message, now: float = 0) -> None:
        deps = {"engine": self.engine, "announcer": Sent(), "observe": self.observe}
        handle_event(message, type(message).__name__, 0, s(now), **deps)  # type: ignore[arg-type]

    def tick(self, now: float) -> None:
        handle_tick(0, s(now), s(now), engine=self.engine, announcer=Sent(), observe=self.observe)

    def overdue(self) -> None:
        """Paid, then past its deadline: flagged and retried once."""
        self.event(paid())
        self.tick(121)

    def exhausted(self) -> None:
        """Every retry sent, no credit: the credit is blocked."""
        self.overdue()
        self.tick(124)
        self.tick(129)

    def counted(self) -> dict[str, float]:
        """Every remediation outcome and escalation counted, as `action:outcome` and `escalated:reason`."""
        out: dict[str, float] = {}
        for action in ACTIONS:
            for outcome in OUTCOMES:
                value = self.registry.get_sample_value(
                    "reconciler_remediations_total", {"action": action, "outcome": outcome}
                )
                if value:
                    out[f"{action}:{outcome}"] = value
        for reason in REASONS:
            value = self.registry.get_sample_value("reconciler_escalations_total", {"reason": reason})
            if value:
                out[f"escalated:{reason}"] = value
        return out


def refund_succeeded(at: float) -> RefundSucceeded:
    return RefundSucceeded(order_id="ord_1", user_id="u1", amount=600, currency="CNY", refund_id="r", refunded_at=s(at))


def refund_failed(at: float) -> RefundFailed:
    return RefundFailed(order_id="ord_1", user_id="u1", reason="card closed", failed_at=s(at))


def test_a_retry_followed_by_the_credit_counts_as_succeeded_once_even_when_the_credit_repeats() -> None:
    r = Reconciler()
    r.overdue()
    r.event(credited(at=122), now=122)
    r.event(credited(at=122), now=123)
    assert r.counted() == {"RetryCredit:requested": 1, "RetryCredit:succeeded": 1}


def test_an_order_credited_in_time_counts_no_remediation_outcome() -> None:
    r = Reconciler()
    r.event(paid())
    r.event(credited(at=5), now=5)
    r.tick(500)
    assert r.counted() == {}


def test_retries_exhausted_count_the_retry_as_failed_once() -> None:
    r = Reconciler()
    r.exhausted()
    r.tick(200)
    assert r.counted() == {"RetryCredit:requested": 2, "RetryCredit:failed": 1, "BlockCredit:requested": 1}


def test_a_credit_landing_after_the_retries_gave_up_leaves_the_retry_failed_and_closes_the_order() -> None:
    r = Reconciler()
    r.exhausted()
    r.event(credited(at=130), now=130)
    assert r.counted() == {"RetryCredit:requested": 2, "RetryCredit:failed": 1, "BlockCredit:requested": 1}


def test_a_final_rejection_while_retrying_counts_the_retry_as_failed_and_requests_the_refund() -> None:
    r = Reconciler()
    r.overdue()
    r.event(rejected(final=True), now=122)
    r.event(rejected(final=True), now=123)
    assert r.counted() == {"RetryCredit:requested": 1, "RetryCredit:failed": 1, "IssueRefund:requested": 1}


def test_a_final_rejection_before_any_retry_counts_only_the_refund_requested() -> None:
    r = Reconciler()
    r.event(paid())
    r.event(rejected(final=True), now=1)
    assert r.counted() == {"IssueRefund:requested": 1}


def test_a_refund_that_succeeds_counts_as_succeeded_once_even_when_its_event_repeats() -> None:
    r = Reconciler()
    r.exhausted()
    r.event(rejected(final=True), now=130)
    r.event(refund_succeeded(131), now=131)
    r.event(refund_succeeded(131), now=132)
    assert r.counted()["IssueRefund:succeeded"] == 1
    assert not any(key.startswith("escalated") or key.endswith(":escalated") for key in r.counted())


def test_a_refund_that_fails_counts_as_failed_and_escalated_with_its_reason_once() -> None:
    r = Reconciler()
    r.exhausted()
    r.event(rejected(final=True), now=130)
    r.event(refund_failed(131), now=131)
    r.event(refund_failed(131), now=132)
    r.tick(1000)
    counted = r.counted()
    assert {k: v for k, v in counted.items() if k.startswith(("IssueRefund", "escalated"))} == {
        "IssueRefund:requested": 1,
        "IssueRefund:failed": 1,
        "IssueRefund:escalated": 1,
        "escalated:refund_failed": 1,
    }


def test_a_credit_landing_after_the_refund_escalates_the_refund_once() -> None:
    r = Reconciler()
    r.event(paid())
    r.event(rejected(final=True), now=1)
    r.event(refund_succeeded(2), now=2)
    r.event(credited(at=3), now=3)
    r.event(credited(at=3), now=4)
    assert r.counted() == {
        "IssueRefund:requested": 1,
        "IssueRefund:succeeded": 1,
        "IssueRefund:escalated": 1,
        "escalated:credited_after_refund": 1,
    }


def test_a_round_counts_its_escalations_only_once_it_is_applied() -> None:
    registry = CollectorRegistry()
    observe, tally = PrometheusObservations(registry), Tally()
    engine = Engine(InMemoryOrderStates(), POLICY)
    refund = [paid(), rejected(final=True), refund_failed(2)]
    for n, message in enumerate(refund):
        handle_event(message, type(message).__name__, 0, s(n), engine=engine, announcer=Sent(), observe=tally)
    assert registry.get_sample_value("reconciler_escalations_total", {"reason": "refund_failed"}) is None
    tally.apply(observe)
    assert registry.get_sample_value("reconciler_escalations_total", {"reason": "refund_failed"}) == 1
    labels = {"action": "IssueRefund", "outcome": "escalated"}
    assert registry.get_sample_value("reconciler_remediations_total", labels) == 1
