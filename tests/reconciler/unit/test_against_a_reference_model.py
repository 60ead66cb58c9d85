"""Random interleavings of payments, credits, duplicates, reorderings, failed payments, worker restarts and
clock advances: the reconciler's flags and commands must match a small reference model exactly."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.events import CreditPosted, PaymentFailed, PaymentSucceeded
from reconciler.domain import Policy
from reconciler.engine import Engine
from tests.reconciler.unit.fakes import InMemoryOrderStates
from tests.reconciler.unit.test_join import kinds

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
THRESHOLD, BACKOFF, ATTEMPTS = 10.0, 1.0, 2
POLICY = Policy(threshold_s=THRESHOLD, retry_attempts=ATTEMPTS, retry_backoff_s=BACKOFF)
ORDERS = [f"ord_{i}" for i in range(4)]


def paid_at(order: str) -> float:
    return 3.0 * int(order[-1])


@dataclass
class ModelOrder:
    paid: bool = False
    credited: bool = False
    credited_at: float = 0.0
    phase: str = "none"
    attempts: int = 0
    next_at: float = 0.0
    anomaly: bool = False
    effects: list[str] = field(default_factory=list)


class Model:
    """The rules, restated as plainly as possible."""

    def __init__(self) -> None:
        self.orders = {o: ModelOrder() for o in ORDERS}

    def pay(self, o: str) -> None:
        m = self.orders[o]
        if m.paid:
            return
        m.paid = True
        if m.credited:
            m.phase = "credited"
            m.effects.append("status:credited")
        else:
            m.phase = "waiting"

    def credit(self, o: str, now: float) -> None:
        m = self.orders[o]
        if m.credited:
            return
        m.credited, m.credited_at = True, now
        if m.paid and m.phase in ("waiting", "retrying", "blocking"):
            m.phase = "credited"
            m.effects.append("status:credited")

    def tick(self, now: float, safe: float) -> None:
        for o, m in self.orders.items():
            if m.phase == "waiting" and paid_at(o) + THRESHOLD <= safe:
                m.phase, m.attempts, m.next_at = "retrying", 1, now + BACKOFF
                m.effects += ["flagged", "status:delayed", "RetryCredit#1"]
            elif m.phase == "retrying" and m.next_at <= now:
                if m.attempts < ATTEMPTS:
                    m.attempts += 1
                    m.next_at = now + BACKOFF * 2 ** (m.attempts - 1)
                    m.effects.append(f"RetryCredit#{m.attempts}")
                else:
                    m.phase = "blocking"
                    m.effects += ["BlockCredit#1", "status:remediating"]
            elif m.credited and not m.paid and not m.anomaly and m.credited_at + THRESHOLD <= safe:
                m.anomaly = True
                m.effects.append("anomaly:credit_without_payment")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


operation = st.one_of(
    st.tuples(st.just("pay"), st.sampled_from(ORDERS)),
    st.tuples(st.just("fail"), st.sampled_from(ORDERS)),
    st.tuples(st.just("credit"), st.sampled_from(ORDERS)),
    st.tuples(st.just("tick"), st.floats(0.0, 6.0), st.floats(0.0, 1.0)),
    st.tuples(st.just("restart")),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(operation, max_size=60))
def test_flags_and_commands_match_the_reference_model(ops: list[tuple[object, ...]]) -> None:
    data: dict[str, dict[str, object]] = {}
    engine = Engine(InMemoryOrderStates(data), POLICY)
    model = Model()
    got: dict[str, list[str]] = {o: [] for o in ORDERS}
    now = safe = 0.0

    def record(results: list[tuple[object, list[object]]]) -> None:
        for state, effects in results:
            engine.commit(state)  # type: ignore[arg-type]
            got[state.order_id] += kinds(effects)  # type: ignore[attr-defined]

    for op in ops:
        kind = op[0]
        if kind == "tick":
            now += float(op[1])  # type: ignore[arg-type]
            safe = min(now, safe + float(op[1]) * float(op[2]) + 0.5)  # the stream lags the wall clock
            record(engine.due(0, at(now), at(safe)))
            model.tick(now, safe)
        elif kind == "restart":
            engine = Engine(InMemoryOrderStates(data), POLICY)
            engine.rebuild([0], engine.states.values())
        else:
            o = str(op[1])
            if kind == "pay":
                message: object = PaymentSucceeded(
                    order_id=o,
                    user_id="u",
                    amount=100,
                    currency="CNY",
                    channel="card",
                    provider="sim",
                    provider_txn_id="tx",
                    paid_at=at(paid_at(o)),
                )
                model.pay(o)
            elif kind == "fail":
                message = PaymentFailed(
                    order_id=o, user_id="u", channel="card", provider="sim", provider_txn_id="tx0", failed_at=at(0)
                )
            else:
                message = CreditPosted(
                    order_id=o, user_id="u", amount=100, currency="CNY", transaction_id="t", credited_at=at(now)
                )
                model.credit(o, now)
            result = engine.apply(message, 0, at(now))  # type: ignore[arg-type]
            assert result is not None
            record([result])

    assert got == {o: m.effects for o, m in model.orders.items()}
    for o, m in model.orders.items():
        flags = got[o].count("flagged")
        assert flags <= 1, f"{o} flagged {flags} times"
        if flags:
            assert m.paid and "status:credited" not in got[o][: got[o].index("flagged")]
