"""Random interleavings of payments, risk-review holds, releases and rejections, credits, ledger rejections,
refunds, duplicates, reorderings, failed payments, worker restarts and clock advances, with per-channel and
per-product thresholds: the reconciler's flags, status changes, commands (sent again when no answer comes) and
support cases must match a small reference model exactly; and once time runs on, no order waits forever."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.base import Message
from contracts.events import (
    CreditPosted,
    CreditRejected,
    OrderHeld,
    OrderReleased,
    OrderReviewRejected,
    OrderStatus,
    PaymentFailed,
    PaymentSucceeded,
    RefundFailed,
    RefundSucceeded,
)
from reconciler.domain import SETTLED, CaseOpened, Command, Effect, OrderState, Phase, Policy, StatusChange
from reconciler.engine import Engine
from tests.reconciler.unit.fakes import InMemoryOrderStates
from tests.reconciler.unit.test_join import kinds

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
DEFAULT, BACKOFF, ATTEMPTS, COMPENSATION = 10.0, 1.0, 2, 5
ANSWER_WAIT, RESENDS = 5.0, 2
CHANNEL_THRESHOLDS = {"carrier": 14.0}
PRODUCT_THRESHOLDS = {"gems": 4.0}
POLICY = Policy(
    threshold_s=DEFAULT,
    channel_thresholds_s=CHANNEL_THRESHOLDS,
    product_thresholds_s=PRODUCT_THRESHOLDS,
    retry_attempts=ATTEMPTS,
    retry_backoff_s=BACKOFF,
    compensation_minor=COMPENSATION,
    answer_wait_s=ANSWER_WAIT,
    answer_resends=RESENDS,
)
ORDERS = [f"ord_{i}" for i in range(4)]
CHANNELS = ("card", "carrier")
PRODUCTS = (None, "gems", "coins")
HOLD_SECONDS = (2.0, 6.0, 12.0)


def paid_at(order: str) -> float:
    return 3.0 * int(order[-1])


def threshold(channel: str, product: str | None) -> float:
    """The product's threshold if it has one, else the channel's, else the default."""
    if product in PRODUCT_THRESHOLDS:
        return PRODUCT_THRESHOLDS[product]
    return CHANNEL_THRESHOLDS.get(channel, DEFAULT)


@dataclass
class ModelOrder:
    channel: str = ""
    product: str | None = None
    paid: bool = False
    failed: bool = False
    credited: bool = False
    credited_at: float = 0.0
    phase: str = "none"
    deadline: float = 0.0
    flagged: bool = False
    rejected_review: bool = False
    rejected_early: bool = False
    status: str = "paid"
    attempts: int = 0
    next_at: float = 0.0
    answer_at: float = 0.0
    resends: int = 0
    anomaly: bool = False
    effects: list[str] = field(default_factory=list)

    def tell(self, status: str) -> None:
        self.status = status
        self.effects.append(f"status:{status}")

    def send(self, command: str, now: float) -> None:
        """A BlockCredit or IssueRefund: its answer is awaited until `answer_at`, then it goes again."""
        self.effects.append(f"{command}#1")
        self.answer_at, self.resends = now + ANSWER_WAIT, 0


class Model:
    """The rules, restated as plainly as possible."""

    def __init__(self) -> None:
        self.orders = {o: ModelOrder() for o in ORDERS}

    def close_credited(self, m: ModelOrder) -> None:
        m.phase = "credited"
        m.tell("credited")
        if m.flagged:
            m.effects.append("GrantCompensation#1")
            m.tell("compensated")

    def pay(self, o: str, channel: str, product: str | None, now: float) -> None:
        m = self.orders[o]
        if m.paid:
            return
        m.paid, m.channel, m.product, m.phase = True, channel, product, "waiting"
        m.deadline = paid_at(o) + threshold(channel, product)
        if m.credited:
            self.close_credited(m)
        elif m.rejected_early:
            self.ledger_rejects_for_good(o, now)

    def hold(self, o: str, channel: str, product: str | None, seconds: float) -> None:
        m = self.orders[o]
        if m.paid:
            return
        m.paid, m.channel, m.product, m.phase = True, channel, product, "held"
        release = paid_at(o) + seconds
        m.deadline = release + threshold(channel, product)
        if m.credited:
            self.close_credited(m)
        else:
            m.tell(f"under_review@{release:g}")

    def fail(self, o: str, channel: str) -> None:
        m = self.orders[o]
        if not m.paid and not m.failed:
            m.failed, m.channel = True, channel

    def release(self, o: str, now: float) -> None:
        m = self.orders[o]
        if m.phase == "held":
            m.phase, m.deadline = "waiting", now + threshold(m.channel, m.product)
            if m.rejected_early:  # the ledger's refusal of the released payment, read before the release
                self.ledger_rejects_for_good(o, now)

    def reject_review(self, o: str, now: float) -> None:
        m = self.orders[o]
        if m.phase == "held":
            m.phase, m.rejected_review = "blocking", True
            m.send("BlockCredit", now)

    def credit(self, o: str, now: float) -> None:
        m = self.orders[o]
        if m.credited:
            return
        m.credited, m.credited_at = True, now
        if not m.paid:
            return
        if m.phase in ("refunding", "refunded"):
            m.phase = "escalated"
            m.effects.append("anomaly:credited_after_refund")
            m.tell("needs_support")
            m.effects.append("case:needs_support:page")
        else:
            self.close_credited(m)

    def ledger_rejects_for_good(self, o: str, now: float) -> None:
        m = self.orders[o]
        if (not m.paid or m.phase == "held") and not m.credited:  # the payment, or the release, refunds
            m.rejected_early = True
        if m.paid and not m.credited and m.phase in ("waiting", "retrying", "blocking"):
            m.phase = "refunding"
            m.send("IssueRefund", now)
            if m.status != "remediating" and not m.rejected_review:
                m.tell("remediating")

    def refund_answer(self, o: str, succeeded: bool) -> None:
        m = self.orders[o]
        if m.phase == "refunding":
            m.phase = "refunded" if succeeded else "escalated"
            m.tell("refunded" if succeeded else "needs_support")
            if not succeeded:
                m.effects.append("case:needs_support:page")

    def tick(self, now: float, safe: float) -> None:
        for m in self.orders.values():
            if m.phase == "held" and not m.flagged and m.deadline <= safe:
                m.flagged = True
                m.effects.append("flagged")
                m.tell("delayed")
                m.effects.append("case:review_overdue:warning")
            elif m.phase == "waiting" and m.deadline <= safe:
                m.phase, m.attempts, m.next_at = "retrying", 1, now + BACKOFF
                if not m.flagged:
                    m.flagged = True
                    m.effects.append("flagged")
                if m.status != "delayed":
                    m.tell("delayed")
                m.effects.append("RetryCredit#1")
            elif m.phase == "retrying" and m.next_at <= now:
                if m.attempts < ATTEMPTS:
                    m.attempts += 1
                    m.next_at = now + BACKOFF * 2 ** (m.attempts - 1)
                    m.effects.append(f"RetryCredit#{m.attempts}")
                else:
                    m.phase = "blocking"
                    m.send("BlockCredit", now)
                    m.tell("remediating")
            elif m.phase in ("blocking", "refunding") and m.status != "needs_support" and m.answer_at <= now:
                command = "BlockCredit" if m.phase == "blocking" else "IssueRefund"
                if m.resends < RESENDS:  # no answer yet: the same command again, the wait doubled
                    m.resends += 1
                    m.answer_at = now + ANSWER_WAIT * 2**m.resends
                    m.effects.append(f"{command}#1~{m.resends}")
                else:  # a person owns it; an answer that comes late still moves it on
                    m.tell("needs_support")
                    m.effects.append("case:needs_support:page")
            elif m.credited and not m.paid and not m.anomaly and m.credited_at + threshold(m.channel, None) <= safe:
                m.anomaly = True
                m.effects.append("anomaly:credit_without_payment")
                m.effects.append("case:credit_without_payment:page")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def described(effects: list[Effect]) -> list[str]:
    """Effect kinds; an `under_review` status also names its estimated time, in seconds after T0; a support case
    its kind and severity."""
    out = []
    for effect in effects:
        if isinstance(effect, CaseOpened):
            out.append(f"case:{effect.kind.value}:{effect.severity.value}")
            continue
        out += kinds([effect])
        if isinstance(effect, Command) and effect.resent:
            out[-1] += f"~{effect.resent}"
        if isinstance(effect, StatusChange) and effect.status is OrderStatus.UNDER_REVIEW:
            eta = effect.estimated_credit_at
            out[-1] += f"@{(eta - T0).total_seconds():g}" if eta else "@none"
    return out


order = st.sampled_from(ORDERS)
tick = st.tuples(st.just("tick"), st.floats(0.0, 8.0), st.floats(0.0, 1.0))
operation = st.one_of(
    st.tuples(st.just("pay"), order),
    st.tuples(st.just("hold"), order, st.sampled_from(HOLD_SECONDS)),
    st.tuples(st.just("release"), order),
    st.tuples(st.just("reject_review"), order),
    st.tuples(st.just("fail"), order),
    st.tuples(st.just("credit"), order),
    st.tuples(st.just("credit_rejected"), order),
    st.tuples(st.just("refunded"), order),
    st.tuples(st.just("refund_failed"), order),
    tick,
    tick,
    tick,
    st.tuples(st.just("restart")),
)
shapes = st.lists(st.tuples(st.sampled_from(CHANNELS), st.sampled_from(PRODUCTS)), min_size=4, max_size=4)


def message_for(op: tuple[object, ...], channel: str, product: str | None, now: float) -> Message:
    kind, o = op[0], str(op[1])
    money = {"user_id": "u", "amount": 100, "currency": "CNY"}
    if kind == "pay":
        return PaymentSucceeded(
            order_id=o,
            **money,
            channel=channel,
            product=product,
            provider="sim",
            provider_txn_id="tx",
            paid_at=at(paid_at(o)),
        )
    if kind == "hold":
        release = at(paid_at(o) + float(op[2]))  # type: ignore[arg-type]
        return OrderHeld(
            order_id=o, **money, channel=channel, product=product, paid_at=at(paid_at(o)), reason="first top-up",
            held_at=at(paid_at(o)), expected_release_at=release,
        )  # fmt: skip
    if kind == "release":
        return OrderReleased(order_id=o, user_id="u", released_at=at(now))
    if kind == "reject_review":
        return OrderReviewRejected(order_id=o, user_id="u", reason="stolen card", rejected_at=at(now))
    if kind == "fail":
        return PaymentFailed(
            order_id=o, user_id="u", channel=channel, provider="sim", provider_txn_id="tx0", failed_at=at(0)
        )
    if kind == "credit":
        return CreditPosted(order_id=o, **money, transaction_id="t", credited_at=at(now))
    if kind == "credit_rejected":
        return CreditRejected(order_id=o, user_id="u", reason="blocked", final=True, rejected_at=at(now))
    if kind == "refunded":
        return RefundSucceeded(order_id=o, **money, refund_id="r", refunded_at=at(now))
    return RefundFailed(order_id=o, user_id="u", reason="provider down", failed_at=at(now))


def apply_to_model(model: Model, op: tuple[object, ...], channel: str, product: str | None, now: float) -> None:
    kind, o = op[0], str(op[1])
    if kind == "pay":
        model.pay(o, channel, product, now)
    elif kind == "hold":
        model.hold(o, channel, product, float(op[2]))  # type: ignore[arg-type]
    elif kind == "release":
        model.release(o, now)
    elif kind == "reject_review":
        model.reject_review(o, now)
    elif kind == "fail":
        model.fail(o, channel)
    elif kind == "credit":
        model.credit(o, now)
    elif kind == "credit_rejected":
        model.ledger_rejects_for_good(o, now)
    else:
        model.refund_answer(o, succeeded=kind == "refunded")


@settings(max_examples=1000, deadline=None)
@given(shapes, st.lists(operation, max_size=80))
def test_flags_and_commands_match_the_reference_model(
    shape: list[tuple[str, str | None]], ops: list[tuple[object, ...]]
) -> None:
    data: dict[str, dict[str, object]] = {}
    engine = Engine(InMemoryOrderStates(data), POLICY)
    model = Model()
    got: dict[str, list[str]] = {o: [] for o in ORDERS}
    now = safe = 0.0

    def record(results: list[tuple[OrderState, list[Effect]]]) -> None:
        for state, effects in results:
            engine.commit(state)
            got[state.order_id] += described(effects)

    for op in ops:
        if op[0] == "tick":
            now += float(op[1])  # type: ignore[arg-type]
            safe = min(now, safe + float(op[1]) * float(op[2]) + 1.0)  # type: ignore[arg-type] # the stream lags
            record(engine.due(0, at(now), at(safe)))
            model.tick(now, safe)
        elif op[0] == "restart":  # a new worker rebuilds its timers from the stored table, as on assignment
            engine = Engine(InMemoryOrderStates(data), POLICY)
            engine.rebuild([0], engine.states.values())
        else:
            channel, product = shape[ORDERS.index(str(op[1]))]
            result = engine.apply(message_for(op, channel, product, now), 0, at(now))
            record([] if result is None else [result])
            apply_to_model(model, op, channel, product, now)

    assert got == {o: m.effects for o, m in model.orders.items()}
    for o, m in model.orders.items():
        assert got[o].count("flagged") <= 1, f"{o} flagged twice"
        cases = [e for e in got[o] if e.startswith("case:")]
        assert len(cases) == len(set(cases)), f"{o} asked twice for a case of one kind"
        if "flagged" in got[o]:
            assert m.paid and "status:credited" not in got[o][: got[o].index("flagged")]
        if m.rejected_review:
            assert not any(e.startswith("RetryCredit") for e in got[o]), "a rejected review was retried"

    # No order waits forever: with no more events, time alone settles every order or hands it to a person.
    for _ in range(2 * (ATTEMPTS + RESENDS) + 4):
        now += 1_000.0
        record(engine.due(0, at(now), at(now)))
    assert engine.pending(0) == 0, "an order still waits on the clock after all its timers ran out"
    for o in ORDERS:
        state = engine.states.get(o)
        if state is None or not state.paid:
            continue
        owned = state.status is OrderStatus.NEEDS_SUPPORT or (state.phase is Phase.HELD and state.flagged_at)
        assert state.phase in SETTLED or owned, f"{o} waits forever in {state.phase.value}, {state.status.value}"
