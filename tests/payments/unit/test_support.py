"""What a person may do to an order, and the one timeline: pure rules, no I/O."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from contracts.commands import REFUND_BLOCKS, SUPPORT_REFUND_BLOCK, BlockCredit, GrantCompensation, RedriveCredit
from contracts.events import CreditRejected
from contracts.topics import Topic
from payments import support
from payments.domain import Order, PaymentStatus
from payments.support import (
    BLOCK_REASON_LIMIT,
    REFUND_AWAITS_BLOCK,
    Entry,
    OrderFacts,
    SupportAction,
    merged,
    outcome,
    refusal,
    send_command,
)

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
PAID = Order(
    "o1", "u1", 600, "CNY", "alipay", PaymentStatus.SUCCEEDED, "delayed", T0, provider="sim", provider_txn_id="tx1",
    paid_at=T0,
)  # fmt: skip


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[Topic, object, str | None]] = []

    def publish(self, topic: Topic, message: object, *, event_id: str | None = None) -> None:
        self.sent.append((topic, message, event_id))


@pytest.mark.parametrize(
    ("action", "facts", "code"),
    [
        (SupportAction.REDRIVE_CREDIT, OrderFacts(replace(PAID, payment_status=PaymentStatus.PENDING)), "not_paid"),
        (SupportAction.REDRIVE_CREDIT, OrderFacts(replace(PAID, status="credited")), "already_credited"),
        (SupportAction.REDRIVE_CREDIT, OrderFacts(PAID, refunds_requested=1), "refund_in_flight"),
        (SupportAction.REDRIVE_CREDIT, OrderFacts(replace(PAID, review_status="held")), "under_review"),
        (SupportAction.REDRIVE_CREDIT, OrderFacts(replace(PAID, status="remediating")), "refund_in_flight"),
        (SupportAction.REDRIVE_CREDIT, OrderFacts(PAID, refund_status="requested"), "refund_in_flight"),
        (SupportAction.REDRIVE_CREDIT, OrderFacts(PAID, refund_status="pending"), "refund_in_flight"),
        (SupportAction.REFUND, OrderFacts(PAID, refund_status="pending"), "refund_in_flight"),
        (SupportAction.REFUND, OrderFacts(PAID, refund_status="succeeded"), "already_refunded"),
        (SupportAction.REFUND, OrderFacts(PAID, refund_status="failed"), "refund_failed"),
        (SupportAction.REFUND, OrderFacts(PAID, refunds_requested=1), "refund_in_flight"),
        (SupportAction.REFUND, OrderFacts(replace(PAID, status="refunded")), "already_refunded"),
        (SupportAction.REFUND, OrderFacts(replace(PAID, status="credited")), "already_credited"),
        (SupportAction.REFUND, OrderFacts(replace(PAID, review_status="held")), "under_review"),
        (SupportAction.REFUND, OrderFacts(replace(PAID, review_status="rejected")), "review_rejected"),
        (SupportAction.REFUND, OrderFacts(replace(PAID, status="remediating")), "refund_in_flight"),
        (
            SupportAction.GRANT_COMPENSATION,
            OrderFacts(replace(PAID, status="credited"), compensations_requested=1),
            "compensation_asked",
        ),
        (SupportAction.GRANT_COMPENSATION, OrderFacts(PAID), "not_credited"),
        (SupportAction.GRANT_COMPENSATION, OrderFacts(replace(PAID, status="compensated")), "already_compensated"),
    ],
)
def test_an_act_that_cannot_apply_is_refused_with_its_code(action: SupportAction, facts: OrderFacts, code: str) -> None:
    refused = refusal(action, facts, 100)
    assert refused is not None and refused.code == code and facts.order.order_id in refused.detail


def test_a_compensation_needs_an_amount_no_larger_than_the_order() -> None:
    credited = OrderFacts(replace(PAID, status="credited"))
    assert refusal(SupportAction.GRANT_COMPENSATION, credited, None).code == "amount_required"  # type: ignore[union-attr]
    too_much = refusal(SupportAction.GRANT_COMPENSATION, credited, PAID.amount + 1)
    assert too_much is not None and too_much.code == "compensation_above_amount"
    assert refusal(SupportAction.GRANT_COMPENSATION, credited, PAID.amount) is None


def test_each_act_sends_its_command_on_its_topic_under_the_given_id() -> None:
    """A refund is the reconciler's first step of one, BlockCredit to the ledger: no IssueRefund before its block. A
    re-drive is a RedriveCredit on ledger.redrives, the topic only payments writes (the ledger lifts a block for
    nothing else)."""
    unit = Recorder()
    facts = OrderFacts(PAID, redrives_requested=2)
    for action in SupportAction:
        send_command(unit, action, facts, by="agent-7", reason="wrote in", amount=50, now=T0, event_id=action.value)
    (t1, retry, e1), (t2, refund, e2), (t3, grant, e3) = unit.sent
    assert (t1, e1, t2, e2, t3, e3) == (
        Topic.LEDGER_REDRIVES, "redrive_credit", Topic.LEDGER_COMMANDS, "refund", Topic.LEDGER_COMMANDS,
        "grant_compensation",
    )  # fmt: skip
    assert isinstance(retry, RedriveCredit) and (retry.requested_by, retry.provider_txn_id, retry.attempt) == (
        "agent-7", "tx1", 3,
    )  # fmt: skip
    assert isinstance(refund, BlockCredit) and (refund.order_id, refund.user_id) == (PAID.order_id, PAID.user_id)
    assert refund.reason == "support refund by agent-7: wrote in"
    assert isinstance(grant, GrantCompensation) and (grant.amount, grant.currency) == (50, "CNY")


def test_a_refunds_block_reason_leaves_room_for_the_ledgers_blocked_prefix() -> None:
    unit = Recorder()
    long = "a" * 200
    send_command(unit, SupportAction.REFUND, OrderFacts(PAID), by=long, reason=long, amount=None, now=T0, event_id="e")
    ((_, block, _),) = unit.sent
    assert isinstance(block, BlockCredit) and len(block.reason) == BLOCK_REASON_LIMIT
    answer = CreditRejected(order_id="o1", user_id="u1", reason=f"blocked: {block.reason}", final=True, rejected_at=T0)
    assert answer.reason.endswith(block.reason)  # the ledger's answer is valid: it carries the reason whole


def test_a_support_refunds_block_reason_starts_with_the_contracts_prefix_a_re_drive_must_never_lift(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The prefix is the contract's constant, not a copy of it: a change of the contract changes what is sent."""
    unit = Recorder()
    send_command(
        unit, SupportAction.REFUND, OrderFacts(PAID), by="agent-7", reason="why", amount=None, now=T0, event_id="e"
    )
    ((_, block, _),) = unit.sent
    assert isinstance(block, BlockCredit) and block.reason == f"{SUPPORT_REFUND_BLOCK}agent-7: why"
    assert block.reason.startswith(REFUND_BLOCKS)
    monkeypatch.setattr(support, "SUPPORT_REFUND_BLOCK", "refund asked by ")
    send_command(
        unit, SupportAction.REFUND, OrderFacts(PAID), by="agent-7", reason="why", amount=None, now=T0, event_id="f"
    )
    assert isinstance(unit.sent[-1][1], BlockCredit) and unit.sent[-1][1].reason == "refund asked by agent-7: why"


def test_a_refund_is_recorded_as_waiting_for_the_ledgers_block_and_other_acts_as_requested() -> None:
    assert outcome(SupportAction.REFUND) == REFUND_AWAITS_BLOCK
    assert {outcome(a) for a in SupportAction if a is not SupportAction.REFUND} == {"requested"}


def test_the_timeline_is_in_time_order_and_at_one_instant_follows_the_money() -> None:
    later = T0 + timedelta(seconds=1)
    support = [Entry(T0, "support", "redrive_credit", "s")]
    ledger = [Entry(later, "ledger", "credit", "l"), Entry(T0, "ledger", "credit", "l0")]
    payments = [Entry(T0, "payments", "payment_succeeded", "p")]
    assert [(e.source, e.at) for e in merged(support, ledger, payments)] == [
        ("payments", T0), ("ledger", T0), ("support", T0), ("ledger", later),
    ]  # fmt: skip
