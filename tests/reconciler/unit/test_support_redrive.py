"""An order that went to a person after its refund failed (phase ESCALATED, `needs_support`) and that the ledger then
credits on support's re-drive closes as credited: the user hears `credited` once, the order settles, nothing more is
refunded."""

from contracts.events import CreditRejected, RefundFailed
from reconciler.domain import Phase, Policy
from tests.reconciler.unit.test_join import POLICY, Harness, credited, kinds, paid, rejected, s


def escalated(policy: Policy = POLICY) -> Harness:
    """Flagged, retried, blocked, finally rejected, refunded in vain: needs_support."""
    h = Harness(policy)
    h.event(paid())
    h.tick(now=121, safe=121)
    h.tick(now=123, safe=123)
    h.tick(now=128, safe=128)
    assert kinds(h.event(rejected(final=True), now=129)) == ["IssueRefund#1"]
    failed = RefundFailed(order_id="ord_1", user_id="u1", reason="card closed", failed_at=s(130))
    assert kinds(h.event(failed, now=130)) == ["status:needs_support"]
    assert h.state().phase is Phase.ESCALATED
    return h


def test_an_escalated_order_credited_by_a_redrive_closes_credited_once_and_refunds_nothing() -> None:
    h = escalated()
    h.restart()  # the escalated order is kept (it never settled) and found again
    assert kinds(h.event(credited(at=900), now=900)) == ["status:credited"]
    assert h.event(credited(at=900), now=901) == []  # the ledger's echo of a second re-drive
    assert h.tick(now=10_000, safe=10_000) == []
    state = h.state()
    assert state.phase is Phase.CREDITED and state.settled_at is not None
    assert kinds(h.effects).count("status:credited") == 1
    assert kinds(h.effects).count("IssueRefund#1") == 1  # only the one that failed, before the person stepped in


def test_a_redrive_the_ledger_refuses_again_leaves_the_order_with_its_person_and_sends_no_refund() -> None:
    h = escalated()
    again = CreditRejected(order_id="ord_1", user_id="u1", reason="wallet frozen", final=True, rejected_at=s(900))
    assert h.event(again, now=900) == []
    assert h.state().phase is Phase.ESCALATED and h.state().settled_at is None
    assert kinds(h.event(credited(at=950), now=950)) == ["status:credited"]  # the next re-drive credits


def test_an_escalated_order_credited_late_is_compensated_like_any_late_credit() -> None:
    h = escalated(Policy(threshold_s=120, retry_attempts=2, retry_backoff_s=2, compensation_minor=100))
    assert kinds(h.event(credited(at=900), now=900)) == ["status:credited", "GrantCompensation#1", "status:compensated"]
