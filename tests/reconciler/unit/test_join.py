from datetime import UTC, datetime, timedelta

from contracts.events import (
    CreditPosted,
    CreditRejected,
    OrderStatus,
    PaymentFailed,
    PaymentSucceeded,
    RefundFailed,
    RefundSucceeded,
)
from reconciler.domain import Anomaly, Command, CommandKind, Flagged, OrderState, Phase, Policy, StatusChange
from reconciler.engine import Engine
from tests.reconciler.unit.fakes import InMemoryOrderStates

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
POLICY = Policy(threshold_s=120, retry_attempts=2, retry_backoff_s=2)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def paid(order_id: str = "ord_1", channel: str = "card") -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id=order_id,
        user_id="u1",
        amount=600,
        currency="CNY",
        channel=channel,
        provider="sim",
        provider_txn_id="tx",
        paid_at=T0,
    )


def credited(order_id: str = "ord_1", at: float = 1) -> CreditPosted:
    return CreditPosted(
        order_id=order_id, user_id="u1", amount=600, currency="CNY", transaction_id="t", credited_at=s(at)
    )


def rejected(final: bool = True) -> CreditRejected:
    return CreditRejected(order_id="ord_1", user_id="u1", reason="wallet frozen", final=final, rejected_at=s(1))


class Harness:
    def __init__(self, policy: Policy = POLICY) -> None:
        self.states = InMemoryOrderStates()
        self.engine = Engine(self.states, policy)
        self.effects: list[object] = []

    def event(self, message: object, now: float = 0) -> list[object]:
        result = self.engine.apply(message, 0, s(now))  # type: ignore[arg-type]
        if result is None:  # nothing changed
            return []
        state, effects = result
        self.engine.commit(state)
        self.effects += effects
        return list(effects)

    def tick(self, now: float, safe: float | None) -> list[object]:
        out: list[object] = []
        for state, effects in self.engine.due(0, s(now), None if safe is None else s(safe)):
            self.engine.commit(state)
            out += effects
        self.effects += out
        return out

    def restart(self) -> None:
        self.engine = Engine(InMemoryOrderStates(dict(self.states.data)), self.engine.policy)
        self.states = self.engine.states  # type: ignore[assignment]
        self.engine.rebuild([0], self.engine.states.values())

    def state(self) -> OrderState:
        found = self.states.get("ord_1")
        assert found is not None
        return found


def kinds(effects: list[object]) -> list[str]:
    out = []
    for e in effects:
        if isinstance(e, StatusChange):
            out.append(f"status:{e.status.value}")
        elif isinstance(e, Command):
            out.append(f"{e.kind.value}#{e.attempt}")
        elif isinstance(e, Flagged):
            out.append("flagged")
        elif isinstance(e, Anomaly):
            out.append(f"anomaly:{e.kind}")
    return out


def test_a_payment_then_its_credit_publishes_credited_once() -> None:
    h = Harness()
    assert h.event(paid()) == []
    assert kinds(h.event(credited())) == ["status:credited"]
    assert h.event(credited()) == [] and h.event(paid()) == []
    assert h.tick(1000, 1000) == []


def test_a_credit_before_its_payment_waits_for_the_payment_and_is_never_flagged() -> None:
    h = Harness()
    assert h.event(credited()) == []
    assert kinds(h.event(paid())) == ["status:credited"]
    assert h.tick(1000, 1000) == []


def test_an_order_is_not_flagged_until_the_credit_stream_is_known_complete_past_its_deadline() -> None:
    h = Harness()
    h.event(paid())
    assert h.tick(now=500, safe=119.9) == []  # wall clock long past, but the stream is behind: no flag
    h.event(credited(at=110))  # the credit was there all along
    assert h.tick(now=501, safe=500) == []
    assert h.state().phase is Phase.CREDITED and h.state().flagged_at is None


def test_an_overdue_order_is_flagged_once_retried_then_blocked_and_refunded() -> None:
    h = Harness()
    h.event(paid())
    assert kinds(h.tick(now=120.2, safe=120.1)) == ["flagged", "status:delayed", "RetryCredit#1"]
    assert h.tick(now=121, safe=121) == []
    assert kinds(h.tick(now=122.3, safe=122)) == ["RetryCredit#2"]
    assert kinds(h.tick(now=126.4, safe=126)) == ["BlockCredit#1", "status:remediating"]
    assert kinds(h.event(rejected(final=True))) == ["IssueRefund#1"]
    refund = RefundSucceeded(
        order_id="ord_1", user_id="u1", amount=600, currency="CNY", refund_id="r", refunded_at=s(130)
    )
    assert kinds(h.event(refund)) == ["status:refunded"]
    assert h.state().phase is Phase.REFUNDED


def test_the_delay_status_carries_an_estimated_time() -> None:
    h = Harness()
    h.event(paid())
    change = next(e for e in h.tick(now=121, safe=121) if isinstance(e, StatusChange))
    assert change.status is OrderStatus.DELAYED and change.estimated_credit_at == s(121 + 2 + 4)


def test_a_late_credit_during_retries_closes_the_order_without_a_refund() -> None:
    h = Harness(Policy(threshold_s=120, retry_attempts=2, retry_backoff_s=2, compensation_minor=100))
    h.event(paid())
    h.tick(now=121, safe=121)
    assert kinds(h.event(credited(at=121.5))) == ["status:credited", "GrantCompensation#1", "status:compensated"]
    assert h.tick(now=1000, safe=1000) == []
    assert "IssueRefund#1" not in kinds(h.effects)


def test_a_credit_that_answers_the_block_wins_and_nothing_is_refunded() -> None:
    h = Harness()
    h.event(paid())
    h.tick(now=121, safe=121)
    h.tick(now=123, safe=123)
    h.tick(now=128, safe=128)
    assert h.state().phase is Phase.BLOCKING
    assert kinds(h.event(credited(at=128.5))) == ["status:credited"]
    assert "IssueRefund#1" not in kinds(h.effects)


def test_a_final_rejection_refunds_at_once_and_a_failed_refund_goes_to_a_person() -> None:
    h = Harness()
    h.event(paid())
    assert kinds(h.event(rejected(final=True))) == ["IssueRefund#1", "status:remediating"]
    assert h.event(rejected(final=False)) == []
    failed = RefundFailed(order_id="ord_1", user_id="u1", reason="card closed", failed_at=s(5))
    assert kinds(h.event(failed)) == ["status:needs_support"]


def test_a_final_rejection_read_before_its_payment_refunds_as_soon_as_the_payment_comes() -> None:
    h = Harness()
    assert h.event(rejected(final=True)) == []
    assert h.state().rejected_early == "wallet frozen"
    assert kinds(h.event(paid())) == ["IssueRefund#1", "status:remediating"]
    assert h.state().phase is Phase.REFUNDING
    refunded = RefundSucceeded(
        order_id="ord_1", user_id="u1", amount=600, currency="CNY", refund_id="r1", refunded_at=s(3)
    )
    assert kinds(h.event(refunded)) == ["status:refunded"]


def test_a_credit_after_an_early_rejection_wins_and_nothing_is_refunded() -> None:
    h = Harness()
    h.event(rejected(final=True))
    h.event(credited(at=2))
    assert kinds(h.event(paid())) == ["status:credited"]
    assert "IssueRefund#1" not in kinds(h.effects)


def test_a_retryable_rejection_changes_nothing() -> None:
    h = Harness()
    h.event(paid())
    assert h.event(rejected(final=False)) == []
    assert h.state().phase is Phase.AWAITING_CREDIT


def test_deadlines_that_passed_while_no_worker_ran_fire_right_after_recovery() -> None:
    h = Harness()
    h.event(paid())
    h.restart()
    assert kinds(h.tick(now=300, safe=300))[:2] == ["flagged", "status:delayed"]
    h.restart()
    assert h.tick(now=300.5, safe=300.5) == []  # flagged once, not again after a second restart


def test_per_channel_thresholds_apply() -> None:
    h = Harness(Policy(threshold_s=120, channel_thresholds_s={"carrier": 300}))
    h.event(paid(channel="carrier"))
    assert h.tick(now=200, safe=200) == []
    assert "flagged" in kinds(h.tick(now=301, safe=301))


def test_a_credit_without_a_payment_is_an_anomaly_once_the_payment_stream_is_past_it() -> None:
    h = Harness()
    h.event(credited(at=0))
    assert h.tick(now=100, safe=100) == []
    assert kinds(h.tick(now=121, safe=121)) == ["anomaly:credit_without_payment"]
    assert h.tick(now=500, safe=500) == []


def test_a_failed_payment_is_never_flagged_and_a_later_success_wins() -> None:
    h = Harness()
    failed = PaymentFailed(
        order_id="ord_1", user_id="u1", channel="card", provider="sim", provider_txn_id="tx0", failed_at=T0
    )
    h.event(failed)
    assert h.tick(now=500, safe=500) == []
    h.event(paid())
    assert h.state().phase is Phase.AWAITING_CREDIT
    assert h.event(failed) == []


def test_state_survives_a_json_round_trip_as_stored_in_the_table() -> None:
    h = Harness()
    h.event(paid())
    h.tick(now=121, safe=121)
    assert OrderState.from_json(h.state().to_json()) == h.state()
    assert h.state().history[0] == ("paid", T0)
    assert Command(CommandKind.RETRY_CREDIT, 1) in h.effects


def test_an_event_that_leaves_the_deadline_unchanged_does_not_get_the_order_flagged_twice() -> None:
    h = Harness()
    h.event(paid())
    h.event(rejected(final=False))  # stored again with the same deadline: a second timer entry
    assert kinds(h.tick(now=120, safe=120)) == ["flagged", "status:delayed", "RetryCredit#1"]
