"""A BlockCredit or IssueRefund whose answer never comes (the command or its answer lost on the way) is sent again
under its own event id, with backoff, a bounded number of times, and then goes to a person: no paid order waits
forever, neither credited nor refunded."""

from prometheus_client import CollectorRegistry

from contracts.events import CaseKind, CaseSeverity, OrderHeld, OrderReviewRejected, OrderStatus, RefundSucceeded
from reconciler.adapters.metrics import PrometheusObservations
from reconciler.domain import CaseOpened, Command, CommandKind, Escalated, EscalationReason, Phase, Policy
from reconciler.engine import Engine
from reconciler.handlers import handle_event, handle_tick
from tests.reconciler.unit.fakes import InMemoryOrderStates
from tests.reconciler.unit.test_join import T0, Harness, credited, kinds, paid, rejected, s
from tests.reconciler.unit.test_remediation_outcomes import Sent

POLICY = Policy(threshold_s=120, retry_attempts=2, retry_backoff_s=2, answer_wait_s=60, answer_resends=2)
DAY = 24 * 3600.0


def blocked() -> Harness:
    """Paid, overdue, both retries sent with no credit: BlockCredit went out at 127 s."""
    h = Harness(POLICY)
    h.event(paid())
    h.tick(121, 121)
    h.tick(123, 123)
    assert kinds(h.tick(127, 127)) == ["BlockCredit#1", "status:remediating"]
    return h


def commands(effects: list[object]) -> list[Command]:
    return [e for e in effects if isinstance(e, Command)]


def test_a_block_credit_with_no_answer_does_not_leave_the_order_waiting_with_no_timer() -> None:
    h = blocked()
    later = [h.tick(127 + n * DAY, 127 + n * DAY) for n in (1, 2, 3, 4)]
    assert later[0] != [], "the order waits for the ledger's answer forever: nothing is sent again, nobody is told"
    assert h.state().status is OrderStatus.NEEDS_SUPPORT
    assert h.engine.pending(0) == 0 and later[-1] == []


def test_an_unanswered_block_credit_is_sent_again_with_backoff_then_goes_to_a_person() -> None:
    h = blocked()
    assert h.tick(186, 186) == []  # not a full wait yet
    first = commands(h.tick(187, 187))
    assert first == [Command(CommandKind.BLOCK_CREDIT, reason="credit retries exhausted", resent=1)]
    assert first[0].attempt == 1, "the same command, re-sent under its own event id (the announcer names resent)"
    assert h.tick(306, 306) == []  # the second wait is twice the first
    assert commands(h.tick(307, 307)) == [
        Command(CommandKind.BLOCK_CREDIT, reason="credit retries exhausted", resent=2)
    ]
    assert h.tick(546, 546) == []
    last = h.tick(547, 547)
    assert kinds(last) == ["status:needs_support"]
    assert Escalated(CommandKind.BLOCK_CREDIT, EscalationReason.NO_ANSWER) in last
    cases = [e for e in last if isinstance(e, CaseOpened)]
    assert [(c.kind, c.severity) for c in cases] == [(CaseKind.NEEDS_SUPPORT, CaseSeverity.PAGE)]
    assert "BlockCredit" in cases[0].reason
    assert h.state().phase is Phase.BLOCKING, "a late answer still moves it on"
    assert h.tick(547 + DAY, 547 + DAY) == [], "a person owns it now: nothing more is sent"


def test_the_ledgers_answer_to_a_block_sent_again_refunds_the_order_and_waits_for_the_refund_afresh() -> None:
    h = blocked()
    h.tick(187, 187)
    assert kinds(h.event(rejected(), now=200)) == ["IssueRefund#1"]
    assert h.state().phase is Phase.REFUNDING
    assert commands(h.tick(259, 259)) == []
    resent = commands(h.tick(260, 260))
    assert [(c.kind, c.attempt, c.resent) for c in resent] == [(CommandKind.ISSUE_REFUND, 1, 1)]
    assert resent[0].reason == "wallet frozen"


def test_an_unanswered_refund_goes_to_a_person_after_its_resends() -> None:
    h = Harness(POLICY)
    h.event(paid())
    h.event(rejected(), now=5)
    sent = [kinds(h.tick(t, t)) for t in (65, 185, 425)]
    assert sent == [["IssueRefund#1"], ["IssueRefund#1"], ["status:needs_support"]]
    assert Escalated(CommandKind.ISSUE_REFUND, EscalationReason.NO_ANSWER) in h.effects
    assert h.state().status is OrderStatus.NEEDS_SUPPORT


def test_a_credit_after_the_block_was_sent_again_closes_the_order_credited() -> None:
    h = blocked()
    h.tick(187, 187)
    assert kinds(h.event(credited(at=190), now=190)) == ["status:credited"]
    assert h.tick(127 + DAY, 127 + DAY) == []


def test_an_order_escalated_for_no_answer_still_closes_credited_if_its_credit_comes_late() -> None:
    h = blocked()
    for t in (187, 307, 547):
        h.tick(t, t)
    assert h.state().status is OrderStatus.NEEDS_SUPPORT
    assert kinds(h.event(credited(at=600), now=600)) == ["status:credited"]


def test_the_ledgers_late_answer_to_an_escalated_block_still_refunds_the_order() -> None:
    h = blocked()
    for t in (187, 307, 547):
        h.tick(t, t)
    assert kinds(h.event(rejected(), now=600)) == ["IssueRefund#1", "status:remediating"]
    assert commands(h.tick(660, 660))[0].resent == 1, "the refund waits for its answer like any other"


def test_a_refunds_late_outcome_settles_an_order_escalated_for_no_answer() -> None:
    h = Harness(POLICY)
    h.event(paid())
    h.event(rejected(), now=5)
    for t in (65, 185, 425):
        h.tick(t, t)
    assert h.state().status is OrderStatus.NEEDS_SUPPORT
    outcome = RefundSucceeded(
        order_id="ord_1", user_id="u1", amount=600, currency="CNY", refund_id="r", refunded_at=s(500)
    )
    assert kinds(h.event(outcome, now=500)) == ["status:refunded"]
    assert h.state().phase is Phase.REFUNDED


def test_a_state_stored_before_the_wait_was_kept_is_sent_again_a_wait_after_its_last_change() -> None:
    h = blocked()
    state = h.state()
    state.next_action_at, state.sent_reason = None, ""
    h.states.put(state)
    h.restart()
    assert commands(h.tick(186, 186)) == []
    assert commands(h.tick(187, 187)) == [
        Command(CommandKind.BLOCK_CREDIT, reason="credit retries exhausted", resent=1)
    ]


def test_a_rejected_reviews_block_is_sent_again_with_its_reason() -> None:
    h = Harness(POLICY)
    held = OrderHeld(
        order_id="ord_1", user_id="u1", amount=600, currency="CNY", channel="card", paid_at=T0, reason="first",
        held_at=T0, expected_release_at=s(600),
    )  # fmt: skip
    h.event(held)
    first = commands(h.event(OrderReviewRejected(order_id="ord_1", user_id="u1", reason="fraud", rejected_at=s(10))))
    again = commands(h.tick(70, 70))
    assert [c.reason for c in again] == [first[0].reason]
    assert again[0].resent == 1


def test_a_restarted_worker_keeps_the_wait_for_an_answer() -> None:
    h = blocked()
    h.restart()
    assert [c.resent for c in commands(h.tick(187, 187))] == [1]


def test_each_resend_and_the_escalation_for_no_answer_are_counted() -> None:
    registry = CollectorRegistry()
    observe = PrometheusObservations(registry)
    engine = Engine(InMemoryOrderStates(), POLICY)
    deps = {"engine": engine, "announcer": Sent(), "observe": observe}
    handle_event(paid(), "PaymentSucceeded", 0, s(0), **deps)  # type: ignore[arg-type]
    handle_event(rejected(), "CreditRejected", 0, s(5), **deps)  # type: ignore[arg-type]

    def counted(outcome: str) -> float | None:
        labels = {"action": "IssueRefund", "outcome": outcome}
        return registry.get_sample_value("reconciler_remediations_total", labels)

    for t in (65, 185):
        handle_tick(0, s(t), s(t), **deps)  # type: ignore[arg-type]
    assert (counted("requested"), counted("resent"), counted("escalated")) == (1, 2, None)
    handle_tick(0, s(425), s(425), **deps)  # type: ignore[arg-type]
    assert (counted("requested"), counted("resent"), counted("escalated")) == (1, 2, 1)
    assert registry.get_sample_value("reconciler_escalations_total", {"reason": "no_answer"}) == 1
