from datetime import UTC, datetime, timedelta

from contracts.events import CreditPosted, OrderStatus, PaymentFailed, PaymentSucceeded
from reconciler import domain
from reconciler.domain import OrderState, StatusChange

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def paid(order_id: str = "ord_1") -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id=order_id,
        user_id="u1",
        amount=600,
        currency="CNY",
        channel="card",
        provider="sim",
        provider_txn_id="tx",
        paid_at=T0,
    )


def credited(order_id: str = "ord_1") -> CreditPosted:
    return CreditPosted(
        order_id=order_id,
        user_id="u1",
        amount=600,
        currency="CNY",
        transaction_id="t",
        credited_at=T0 + timedelta(seconds=1),
    )


def test_a_payment_then_its_credit_publishes_credited_once() -> None:
    state, effects = domain.on_payment_succeeded(None, paid())
    assert effects == []
    state, effects = domain.on_credit_posted(state, credited())
    assert effects == [StatusChange(OrderStatus.CREDITED, OrderStatus.PAID, "credit posted", 1)]
    again, effects = domain.on_credit_posted(state, credited())
    assert effects == [] and again == state


def test_a_credit_before_its_payment_waits_for_the_payment() -> None:
    state, effects = domain.on_credit_posted(None, credited())
    assert effects == [] and state.credited and not state.paid
    state, effects = domain.on_payment_succeeded(state, paid())
    assert [e.status for e in effects] == [OrderStatus.CREDITED]


def test_duplicate_payments_change_nothing() -> None:
    state, _ = domain.on_payment_succeeded(None, paid())
    again, effects = domain.on_payment_succeeded(state, paid())
    assert again == state and effects == []


def test_a_failed_payment_ends_the_order_silently_and_a_later_success_wins() -> None:
    failed = PaymentFailed(
        order_id="ord_1", user_id="u1", channel="card", provider="sim", provider_txn_id="tx0", failed_at=T0
    )
    state, effects = domain.on_payment_failed(None, failed)
    assert state.payment_failed and effects == []
    state, _ = domain.on_payment_succeeded(state, paid())
    assert state.paid and not state.payment_failed
    state, effects = domain.on_payment_failed(state, failed)
    assert state.paid and effects == []


def test_state_survives_a_json_round_trip_as_stored_in_the_table() -> None:
    state, _ = domain.on_payment_succeeded(None, paid())
    state, _ = domain.on_credit_posted(state, credited())
    assert OrderState.from_json(state.to_json()) == state
