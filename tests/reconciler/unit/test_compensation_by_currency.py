"""A late credit's delay compensation is set per currency (RECONCILER_COMPENSATION), each amount in its own
currency's minor units: one number for every currency was 5.00 CNY on a CNY order and 500 JPY on a JPY one."""

from datetime import UTC, datetime, timedelta

import pytest

from contracts.commands import GrantCompensation
from contracts.events import CreditPosted, OrderStatus, PaymentSucceeded
from reconciler.config import Settings
from reconciler.domain import Command, CommandKind, Effect, Outcome, Policy, Remediated, StatusChange
from reconciler.engine import Engine
from servicekit.settings import read_settings
from tests.reconciler.unit.fakes import InMemoryOrderStates
from tests.reconciler.unit.worker import Worker

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
PER_CURRENCY = Policy(threshold_s=120, retry_attempts=2, retry_backoff_s=2, compensation={"CNY": 500, "JPY": 50})


def paid(order_id: str, amount: int, currency: str, at: datetime = T0) -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id=order_id, user_id="u1", amount=amount, currency=currency, channel="card", provider="sim",
        provider_txn_id=f"tx-{order_id}", paid_at=at,
    )  # fmt: skip


def credited(order_id: str, amount: int, currency: str, at: datetime) -> CreditPosted:
    return CreditPosted(
        order_id=order_id, user_id="u1", amount=amount, currency=currency, transaction_id=f"t-{order_id}",
        credited_at=at,
    )  # fmt: skip


def credited_late(policy: Policy, amount: int, currency: str) -> tuple[list[Effect], list[str]]:
    """The effects of a credit that lands after the order was flagged overdue, and the order's timeline."""
    engine = Engine(InMemoryOrderStates(), policy)
    applied = engine.apply(paid("ord_1", amount, currency), 0, T0)
    assert applied is not None
    engine.commit(applied[0])
    flag_at, late = T0 + timedelta(seconds=121), T0 + timedelta(seconds=121.5)
    for state, _ in engine.due(0, flag_at, flag_at):
        engine.commit(state)
    applied = engine.apply(credited("ord_1", amount, currency, late), 0, late)
    assert applied is not None
    state, effects = applied
    assert state.flagged_at is not None, "the order was late"
    return effects, [what for what, _ in state.history]


def grants(effects: list[Effect]) -> list[int]:
    return [e.amount for e in effects if isinstance(e, Command) and e.kind is CommandKind.GRANT_COMPENSATION]


def test_a_late_jpy_order_gets_the_jpy_amount_and_a_late_cny_order_the_cny_amount() -> None:
    jpy, _ = credited_late(PER_CURRENCY, 6000, "JPY")  # 6000 JPY
    cny, _ = credited_late(PER_CURRENCY, 600, "CNY")  # 6.00 CNY
    assert grants(jpy) == [50] and grants(cny) == [500]
    assert [e.status for e in jpy if isinstance(e, StatusChange)] == [OrderStatus.CREDITED, OrderStatus.COMPENSATED]


def test_a_late_order_in_a_currency_the_compensation_does_not_list_gets_none_and_is_counted_skipped() -> None:
    effects, timeline = credited_late(PER_CURRENCY, 600, "USD")
    assert grants(effects) == []
    assert [e.status for e in effects if isinstance(e, StatusChange)] == [OrderStatus.CREDITED]
    assert Remediated(CommandKind.GRANT_COMPENSATION, Outcome.SKIPPED) in effects
    assert "compensation_skipped:USD" in timeline


def test_a_currency_listed_with_nothing_gets_no_compensation_and_is_not_counted_skipped() -> None:
    effects, timeline = credited_late(Policy(threshold_s=120, compensation={"CNY": 500, "JPY": 0}), 6000, "JPY")
    assert grants(effects) == [] and Remediated(CommandKind.GRANT_COMPENSATION, Outcome.SKIPPED) not in effects
    assert not any(what.startswith("compensation_skipped") for what in timeline)


def test_a_compensation_above_the_orders_amount_is_the_orders_amount() -> None:
    effects, _ = credited_late(PER_CURRENCY, 30, "JPY")
    assert grants(effects) == [30]


def test_one_amount_for_every_currency_still_compensates_every_currency_with_that_number() -> None:
    legacy = Policy(threshold_s=120, compensation_minor=100)
    assert grants(credited_late(legacy, 6000, "JPY")[0]) == [100]
    assert grants(credited_late(legacy, 600, "USD")[0]) == [100]


async def test_the_worker_sends_the_compensation_of_the_orders_currency_and_counts_an_unlisted_one_skipped() -> None:
    worker = Worker(Policy(threshold_s=5, compensation={"CNY": 500, "JPY": 50}))
    ago = datetime.now(UTC) - timedelta(seconds=30)
    orders = {"o_jpy": (6000, "JPY"), "o_cny": (600, "CNY"), "o_usd": (600, "USD")}
    await worker.batch(*(worker.record(paid(oid, amount, currency, ago)) for oid, (amount, currency) in orders.items()))
    await worker.tick()  # all three flagged
    now = datetime.now(UTC)
    await worker.batch(*(worker.record(credited(oid, a, c, now)) for oid, (a, c) in orders.items()))
    granted = [m for _, m in worker.producer.sent if isinstance(m, GrantCompensation)]
    assert sorted((m.order_id, m.amount, m.currency) for m in granted) == [("o_cny", 500, "CNY"), ("o_jpy", 50, "JPY")]
    skipped = {"action": "GrantCompensation", "outcome": "skipped"}
    assert worker.observe.remediations.labels(**skipped)._value.get() == 1


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("RECONCILER_COMPENSATION", raising=False)
    monkeypatch.delenv("RECONCILER_COMPENSATION_MINOR", raising=False)
    return monkeypatch


def refusal(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        read_settings(Settings, "reconciler")
    return str(stopped.value)


def test_the_per_currency_compensation_is_read_as_json_into_the_policy(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("RECONCILER_COMPENSATION", '{"CNY": 500, "JPY": 50}')
    policy = read_settings(Settings, "reconciler").policy()
    assert policy.compensation == {"CNY": 500, "JPY": 50} and policy.compensation_minor == 0


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('{"JPX": 50}', "RECONCILER_COMPENSATION: 'JPX' is not an ISO 4217 currency"),
        ('{"jpy": 50}', "RECONCILER_COMPENSATION: 'jpy' is not an ISO 4217 currency"),
        ('{"XAU": 50}', "RECONCILER_COMPENSATION: XAU has no minor unit in ISO 4217"),
        ('{"CNY": -1}', "RECONCILER_COMPENSATION[CNY]: Input should be greater than or equal to 0"),
        ('{"CNY": 2.5}', "RECONCILER_COMPENSATION[CNY]: Input should be a valid integer"),
        ('["CNY"]', "RECONCILER_COMPENSATION: Input should be a valid dictionary"),
    ],
)
def test_a_bad_per_currency_compensation_stops_the_reconciler_naming_the_variable(
    environment: pytest.MonkeyPatch, value: str, says: str
) -> None:
    message = refusal(environment, RECONCILER_COMPENSATION=value)
    assert message.startswith("reconciler cannot start, fix its settings: ") and says in message
    assert "\n" not in message


def test_one_amount_for_every_currency_beside_amounts_per_currency_is_refused(
    environment: pytest.MonkeyPatch,
) -> None:
    message = refusal(environment, RECONCILER_COMPENSATION='{"CNY": 500}', RECONCILER_COMPENSATION_MINOR="500")
    assert "RECONCILER_COMPENSATION_MINOR and RECONCILER_COMPENSATION are both set" in message


def test_one_amount_for_every_currency_alone_still_reads_as_before(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("RECONCILER_COMPENSATION_MINOR", "500")
    policy = read_settings(Settings, "reconciler").policy()
    assert policy.compensation == {} and policy.compensation_minor == 500
