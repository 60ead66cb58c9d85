"""Risk-review holds and per-product thresholds, one rule at a time."""

from datetime import timedelta

from contracts.events import CreditRejected, OrderHeld, OrderReleased, OrderReviewRejected, OrderStatus
from reconciler.domain import Command, CommandKind, Phase, Policy, StatusChange
from tests.reconciler.unit.test_join import POLICY, T0, Harness, credited, kinds, paid, rejected, s

REVIEW_S = 900


def held(expected_s: float = REVIEW_S, product: str | None = None) -> OrderHeld:
    return OrderHeld(
        order_id="ord_1",
        user_id="u1",
        amount=60000,
        currency="CNY",
        channel="card",
        product=product,
        paid_at=T0,
        reason="first top-up above 50000",
        held_at=T0,
        expected_release_at=s(expected_s),
    )


def released(at: float) -> OrderReleased:
    return OrderReleased(order_id="ord_1", user_id="u1", released_at=s(at))


def test_a_hold_tells_the_user_the_expected_release_and_moves_the_deadline_past_it() -> None:
    h = Harness()
    effects = h.event(held())
    assert len(effects) == 1 and isinstance(effects[0], StatusChange)
    assert effects[0].status is OrderStatus.UNDER_REVIEW and effects[0].estimated_credit_at == s(REVIEW_S)
    assert h.state().deadline == s(REVIEW_S) + POLICY.threshold("card")
    assert h.tick(now=REVIEW_S + 100, safe=REVIEW_S + 100) == []  # within expected release + threshold
    assert h.event(paid()) == []  # the PaymentSucceeded that follows a release adds nothing


def test_a_held_order_is_never_retried_and_a_review_past_its_time_is_flagged_once() -> None:
    h = Harness()
    h.event(held())
    late = REVIEW_S + 120
    assert kinds(h.tick(now=late, safe=late)) == ["flagged", "status:delayed"]
    assert h.tick(now=late + 10_000, safe=late + 10_000) == []
    assert h.state().phase is Phase.HELD


def test_a_released_order_waits_for_its_credit_until_release_plus_threshold_and_is_flagged_only_once() -> None:
    h = Harness()
    h.event(held())
    h.tick(now=REVIEW_S + 120, safe=REVIEW_S + 120)  # flagged while held
    h.event(released(at=2000))
    assert h.tick(now=2119, safe=2119) == []
    assert kinds(h.tick(now=2120, safe=2120)) == ["RetryCredit#1"]  # no second flag, user already told


def test_a_release_then_a_timely_credit_publishes_credited_with_no_flag() -> None:
    h = Harness()
    h.event(held())
    h.event(released(at=300))
    assert kinds(h.event(credited(at=301))) == ["status:credited"]
    assert "flagged" not in kinds(h.effects)


def test_a_rejected_review_blocks_the_credit_then_refunds_without_a_retry_message() -> None:
    h = Harness()
    h.event(held())
    effects = h.event(OrderReviewRejected(order_id="ord_1", user_id="u1", reason="stolen card", rejected_at=s(60)))
    assert effects == [Command(CommandKind.BLOCK_CREDIT, reason="risk review rejected: stolen card")]
    assert kinds(h.event(rejected(final=True))) == ["IssueRefund#1"]
    assert h.state().phase is Phase.REFUNDING and h.state().status is OrderStatus.UNDER_REVIEW


def test_a_final_rejection_read_before_the_release_it_answers_refunds_at_the_release_without_a_flag() -> None:
    h = Harness()
    h.event(held())
    # The ledger refused the payment published at the release; payments.events, with the release, lags behind.
    final = CreditRejected(order_id="ord_1", user_id="u1", reason="wallet frozen", final=True, rejected_at=s(901))
    assert h.event(final) == []
    assert kinds(h.event(released(at=900))) == ["IssueRefund#1", "status:remediating"]
    assert h.event(paid()) == []
    assert h.state().phase is Phase.REFUNDING
    # No flag, no retry: the refund is under way, and only sent again as it has had no answer.
    assert h.tick(now=900 + 10_000, safe=900 + 10_000) == [
        Command(CommandKind.ISSUE_REFUND, reason="wallet frozen", resent=1)
    ]
    assert "flagged" not in kinds(h.effects)


def test_a_credit_read_before_the_hold_closes_the_order_as_credited() -> None:
    h = Harness()
    h.event(credited(at=5))
    assert kinds(h.event(held())) == ["status:credited"]
    assert h.event(released(at=4)) == []


def test_the_product_threshold_beats_the_channel_threshold_which_beats_the_default() -> None:
    policy = Policy(threshold_s=120, channel_thresholds_s={"carrier": 300}, product_thresholds_s={"gems": 30})
    assert policy.threshold("carrier", "gems") == timedelta(seconds=30)
    assert policy.threshold("carrier", "coins") == timedelta(seconds=300)
    assert policy.threshold("card", None) == timedelta(seconds=120)
    h = Harness(policy)
    h.event(paid(channel="carrier").model_copy(update={"product": "gems"}))
    assert h.state().deadline == T0 + timedelta(seconds=30)
