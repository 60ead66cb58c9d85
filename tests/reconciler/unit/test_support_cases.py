"""An order a person has to own is announced for a support case (CaseRequested on support.cases): escalated to
needs_support, a review still open at its deadline, a credit without a payment. Once per order and kind,
however often events repeat, and with an event id deterministic per order and kind so a repeat opens nothing."""

from datetime import UTC, datetime

from contracts.codec import decode
from contracts.events import CaseKind, CaseRequested, CaseSeverity, CreditRejected, PaymentFailed, RefundFailed
from reconciler.adapters.announcer import KafkaAnnouncer
from reconciler.domain import CaseOpened, OrderState, Policy
from tests.reconciler.unit.test_join import T0, Harness, credited, paid, rejected, s
from tests.reconciler.unit.test_review_holds import REVIEW_S, held, released
from tests.reconciler.unit.worker import DEAD_LETTERS, TOPICS, Worker
from tests.reconciler.unit.worker import credited as credited_now
from tests.reconciler.unit.worker import paid as paid_now

THRESHOLD_S = Policy(threshold_s=120).threshold_s


def cases(effects: list[object]) -> list[CaseOpened]:
    return [e for e in effects if isinstance(e, CaseOpened)]


def refund_failed(reason: str = "card closed", at: float = 5) -> RefundFailed:
    return RefundFailed(order_id="ord_1", user_id="u1", reason=reason, failed_at=s(at))


def test_a_failed_refund_asks_for_a_needs_support_case_that_pages_naming_the_refunds_failure_once() -> None:
    h = Harness()
    h.event(paid())
    h.event(rejected(final=True))  # IssueRefund
    opened = cases(h.event(refund_failed("card closed")))
    assert opened == [CaseOpened(CaseKind.NEEDS_SUPPORT, CaseSeverity.PAGE, "refund failed: card closed")]
    assert h.event(refund_failed("card closed")) == []
    assert h.event(refund_failed("another answer", at=9)) == []
    h.restart()
    assert cases(h.tick(now=10_000, safe=10_000)) == []
    assert cases(h.effects) == opened


def test_a_credit_that_lands_while_the_refund_is_under_way_asks_for_a_needs_support_case_once() -> None:
    h = Harness()
    h.event(paid())
    h.event(rejected(final=True))  # IssueRefund
    opened = cases(h.event(credited(at=3)))
    assert [(c.kind, c.severity) for c in opened] == [(CaseKind.NEEDS_SUPPORT, CaseSeverity.PAGE)]
    assert "refund" in opened[0].reason
    assert h.event(credited(at=3)) == []
    assert h.event(refund_failed()) == []  # escalated already: no second case of the same kind


def test_a_review_still_open_at_its_deadline_asks_for_a_review_overdue_warning_once_and_a_release_adds_none() -> None:
    h = Harness()
    h.event(held())
    deadline = REVIEW_S + THRESHOLD_S
    assert cases(h.tick(now=deadline - 1, safe=deadline - 1)) == []
    opened = cases(h.tick(now=deadline, safe=deadline))
    assert [(c.kind, c.severity) for c in opened] == [(CaseKind.REVIEW_OVERDUE, CaseSeverity.WARNING)]
    assert s(REVIEW_S).isoformat(timespec="seconds") in opened[0].reason, "names the expected release"
    assert h.tick(now=deadline + 10_000, safe=deadline + 10_000) == []
    h.event(released(at=deadline + 20_000))
    later = deadline + 20_000 + THRESHOLD_S
    assert cases(h.tick(now=later, safe=later)) == []  # retried as any late order, no second review case
    assert cases(h.effects) == opened


def test_a_hold_released_in_time_asks_for_no_case() -> None:
    h = Harness()
    h.event(held())
    h.event(released(at=REVIEW_S))
    h.event(credited(at=REVIEW_S + 1))
    h.event(paid())
    assert cases(h.tick(now=REVIEW_S * 10, safe=REVIEW_S * 10)) == []
    assert cases(h.effects) == []


def test_a_credit_without_a_payment_asks_for_a_case_that_pages_once() -> None:
    h = Harness()
    h.event(credited(at=0))
    assert cases(h.tick(now=THRESHOLD_S - 1, safe=THRESHOLD_S - 1)) == []
    opened = cases(h.tick(now=THRESHOLD_S, safe=THRESHOLD_S))
    assert [(c.kind, c.severity) for c in opened] == [(CaseKind.CREDIT_WITHOUT_PAYMENT, CaseSeverity.PAGE)]
    assert h.event(credited(at=0)) == []
    assert h.tick(now=THRESHOLD_S * 10, safe=THRESHOLD_S * 10) == []
    assert cases(h.effects) == opened


def test_a_credit_for_a_failed_payment_asks_for_a_case_saying_the_payment_failed() -> None:
    h = Harness()
    h.event(
        PaymentFailed(
            order_id="ord_1", user_id="u1", channel="card", provider="sim", provider_txn_id="tx0", failed_at=T0
        )
    )
    h.event(credited(at=1))
    opened = cases(h.tick(now=THRESHOLD_S + 1, safe=THRESHOLD_S + 1))
    assert [c.kind for c in opened] == [CaseKind.CREDIT_WITHOUT_PAYMENT]
    assert "payment failed" in opened[0].reason


def test_a_paid_order_credited_late_asks_for_no_case() -> None:
    h = Harness()
    h.event(paid())
    h.tick(now=THRESHOLD_S, safe=THRESHOLD_S)  # flagged, RetryCredit #1
    h.event(credited(at=THRESHOLD_S + 1))
    assert cases(h.effects) == []


def rejected_now(order_id: str) -> CreditRejected:
    return CreditRejected(
        order_id=order_id, user_id="u1", reason="wallet frozen", final=True, rejected_at=datetime.now(UTC)
    )


def refund_failed_now(order_id: str) -> RefundFailed:
    return RefundFailed(order_id=order_id, user_id="u1", reason="card closed", failed_at=datetime.now(UTC))


def requested(announcer: KafkaAnnouncer, state: OrderState, case: CaseOpened) -> tuple[str, CaseRequested, str]:
    announcer.case(state, case)
    [(topic, record)] = announcer.records()
    message, envelope = decode(record.value, record.headers)
    assert isinstance(message, CaseRequested)
    assert record.key == state.order_id.encode()
    return topic, message, envelope.event_id


def test_a_case_is_sent_on_support_cases_with_an_event_id_that_repeats_for_its_order_and_kind_only() -> None:
    announcer = KafkaAnnouncer(TOPICS, DEAD_LETTERS, lambda: None)
    state = OrderState(order_id="ord_1", user_id="u1")
    page = CaseOpened(CaseKind.NEEDS_SUPPORT, CaseSeverity.PAGE, "refund failed: card closed")
    topic, message, first = requested(announcer, state, page)
    assert topic == TOPICS["cases"] == "support.cases"
    assert (message.order_id, message.user_id, message.kind, message.severity, message.reason) == (
        "ord_1", "u1", CaseKind.NEEDS_SUPPORT, CaseSeverity.PAGE, "refund failed: card closed",
    )  # fmt: skip
    assert message.requested_at <= datetime.now(UTC)
    again = KafkaAnnouncer(TOPICS, DEAD_LETTERS, lambda: None)  # another worker, after a crash
    assert requested(again, state, page)[2] == first
    other_kind = CaseOpened(CaseKind.CREDIT_WITHOUT_PAYMENT, CaseSeverity.PAGE, "credited with no payment")
    assert requested(announcer, state, other_kind)[2] != first
    assert requested(announcer, OrderState(order_id="ord_2", user_id="u1"), page)[2] != first


def test_a_case_that_breaks_its_contract_is_dead_lettered_naming_the_case_and_the_partition_goes_on() -> None:
    unbuildable: list[None] = []
    announcer = KafkaAnnouncer(TOPICS, DEAD_LETTERS, lambda: unbuildable.append(None))
    announcer.case(OrderState(order_id="ord_1", user_id=""), CaseOpened(CaseKind.NEEDS_SUPPORT, CaseSeverity.PAGE, "x"))
    [(topic, record)] = announcer.records()
    assert topic == DEAD_LETTERS and len(unbuildable) == 1
    reason = dict(record.headers)["dlq_reason"]
    assert reason.startswith(b"unbuildable: case needs_support for order ord_1")


async def test_a_round_that_escalates_an_order_sends_its_case_with_the_status_change_before_storing_the_state() -> None:
    worker = Worker()
    await worker.batch(worker.record(paid_now("o1")), worker.record(rejected_now("o1")))  # IssueRefund
    await worker.batch(worker.record(refund_failed_now("o1")))
    sent = [(topic, m) for topic, m in worker.producer.sent if isinstance(m, CaseRequested)]
    assert [(topic, m.order_id, m.kind, m.severity) for topic, m in sent] == [
        ("support.cases", "o1", CaseKind.NEEDS_SUPPORT, CaseSeverity.PAGE)
    ]
    case_at = worker.journal.index("CaseRequested o1")
    assert case_at < max(i for i, what in enumerate(worker.journal) if what == "changelog o1")
    await worker.batch(worker.record(refund_failed_now("o1")))  # a repeat
    await worker.batch(worker.record(credited_now("o1")))
    assert len([m for _, m in worker.producer.sent if isinstance(m, CaseRequested)]) == 1
