import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from contracts.events import CaseKind, CaseSeverity, PaymentFailed, PaymentSucceeded
from contracts.topics import Topic
from payments import domain
from payments.callbacks import CLAMPED, handle_callback
from payments.domain import Order, Outcome, Payers, PaymentNotice, PaymentStatus
from payments.handlers import IdempotencyConflict, PlaceOrder, handle_place_order
from servicekit.signatures import sign
from tests.payments.unit.fakes import DEVELOPMENT_PAYERS, FixedClock, InMemoryOrderBook, InMemoryPayments, Store

NOW = 1_800_000_000.0
SECRETS = {"sim": ["sim-secret"]}


def order(**changes: object) -> Order:
    base = Order(
        order_id="ord_1",
        user_id="u1",
        amount=600,
        currency="CNY",
        channel="alipay",
        payment_status=PaymentStatus.PENDING,
        status="submitted",
        created_at=datetime.now(UTC),
    )
    return replace(base, **changes) if changes else base  # type: ignore[arg-type]


def notice(succeeded: bool = True, txn: str = "tx1", amount: int = 600, currency: str = "CNY") -> PaymentNotice:
    return PaymentNotice("ord_1", "sim", txn, succeeded, amount, currency, datetime.now(UTC))


def test_a_success_pays_a_pending_order() -> None:
    decision = domain.decide(order(), notice(), DEVELOPMENT_PAYERS)
    assert decision.outcome is Outcome.PAID
    assert decision.order.payment_status is PaymentStatus.SUCCEEDED and decision.order.provider_txn_id == "tx1"


def test_the_same_success_again_is_a_duplicate_with_no_change() -> None:
    paid = domain.decide(order(), notice(), DEVELOPMENT_PAYERS).order
    decision = domain.decide(paid, notice(), DEVELOPMENT_PAYERS)
    assert decision.outcome is Outcome.DUPLICATE and decision.order == paid


def test_a_success_after_a_failure_pays_the_order() -> None:
    failed = domain.decide(order(), notice(succeeded=False, txn="tx0"), DEVELOPMENT_PAYERS).order
    assert failed.payment_status is PaymentStatus.FAILED
    assert domain.decide(failed, notice(), DEVELOPMENT_PAYERS).outcome is Outcome.PAID


def test_a_failure_never_undoes_a_success() -> None:
    paid = domain.decide(order(), notice(), DEVELOPMENT_PAYERS).order
    decision = domain.decide(paid, notice(succeeded=False), DEVELOPMENT_PAYERS)
    assert decision.outcome is Outcome.IGNORED and decision.order == paid


def test_a_failure_notice_of_an_expired_order_is_ignored_and_a_success_still_pays_it() -> None:
    expired = order(status=domain.EXPIRED)
    closed = domain.decide(expired, notice(succeeded=False), DEVELOPMENT_PAYERS)
    assert closed.outcome is Outcome.IGNORED and closed.order == expired
    paid = domain.decide(expired, notice(), DEVELOPMENT_PAYERS)
    assert paid.outcome is Outcome.PAID and paid.order.status == "paid"


def test_a_second_charge_on_a_paid_order_is_refused() -> None:
    paid = domain.decide(order(), notice(), DEVELOPMENT_PAYERS).order
    assert domain.decide(paid, notice(txn="tx2"), DEVELOPMENT_PAYERS).code == "already_paid"


@pytest.mark.parametrize(("amount", "currency"), [(601, "CNY"), (600, "USD")])
def test_an_amount_or_currency_that_does_not_match_the_order_is_refused(amount: int, currency: str) -> None:
    decision = domain.decide(order(), notice(amount=amount, currency=currency), DEVELOPMENT_PAYERS)
    assert decision.outcome is Outcome.REJECTED and decision.code == "amount_mismatch"


PRODUCTION_PAYERS = Payers({"alipay": "alipay", "wechat": "wechatpay"})
"""Who may pay which channel in production: no simulated provider, each channel its own provider."""


@pytest.mark.parametrize("provider", ["sim", "wechatpay"])
def test_in_production_a_provider_that_does_not_take_the_orders_channel_never_pays_it(provider: str) -> None:
    pending = order(channel="alipay")
    decision = domain.decide(pending, replace(notice(), provider=provider), PRODUCTION_PAYERS)
    assert (decision.outcome, decision.code) == (Outcome.REJECTED, "wrong_provider")
    assert decision.reason == f"alipay orders are paid through alipay, not {provider}"
    assert decision.order == pending


def test_the_orders_own_provider_pays_it_and_any_provider_pays_a_channel_no_provider_is_named_for() -> None:
    own = domain.decide(order(channel="wechat"), replace(notice(), provider="wechatpay"), PRODUCTION_PAYERS)
    assert own.outcome is Outcome.PAID and own.order.provider == "wechatpay"
    card = domain.decide(order(channel="card"), replace(notice(), provider="alipay"), PRODUCTION_PAYERS)
    assert card.outcome is Outcome.PAID


def test_in_development_the_simulated_provider_pays_every_channel_but_a_real_one_only_its_own() -> None:
    for channel in ("alipay", "wechat", "card"):
        assert domain.decide(order(channel=channel), notice(), DEVELOPMENT_PAYERS).outcome is Outcome.PAID
    other = domain.decide(order(channel="wechat"), replace(notice(), provider="alipay"), DEVELOPMENT_PAYERS)
    assert other.code == "wrong_provider"


async def test_a_signed_callback_from_another_channels_provider_is_refused_and_kept_for_audit_with_its_reason() -> None:
    store = Store()
    placed, _ = await place(store)  # an alipay order
    published = len(store.published)
    body = callback_body(placed.order_id)
    result = await handle_callback(
        "wechatpay", body, sign("wechat-secret", body, int(NOW)), secrets={"wechatpay": ["wechat-secret"]},
        payers=PRODUCTION_PAYERS, uow=lambda: InMemoryPayments(store), clock=FixedClock(NOW),
    )  # fmt: skip
    assert (result.status_code, result.code) == (409, "wrong_provider")
    assert result.detail == "alipay orders are paid through alipay, not wechatpay"
    assert [(c["provider"], c["order_id"], c["outcome"], c["reason"]) for c in store.callbacks] == [
        ("wechatpay", placed.order_id, "rejected", f"wrong_provider: {result.detail}")
    ]
    assert store.orders[placed.order_id].payment_status is PaymentStatus.PENDING
    assert len(store.published) == published
    # wechatpay says, signed, that it took the money: nothing credits or refunds it, so a person is asked to.
    [(case, _)] = store.cases.values()
    assert (case.order_id, case.kind) == (placed.order_id, CaseKind.REFUSED_CHARGE)


def test_status_updates_only_move_forward_by_sequence() -> None:
    credited = domain.apply_status(order(), "credited", 2)
    assert credited is not None and credited.status == "credited"
    assert domain.apply_status(credited, "delayed", 1) is None
    assert domain.apply_status(credited, "delayed", 2) is None


def callback_body(order_id: str, status: str = "succeeded", amount: int = 600) -> bytes:
    return json.dumps(
        {
            "order_id": order_id,
            "provider_txn_id": "tx1",
            "status": status,
            "amount": amount,
            "currency": "CNY",
            "paid_at": "2027-01-15T07:59:00Z",
        }
    ).encode()


async def place(store: Store, key: str | None = None, amount: int = 600) -> tuple[Order, bool]:
    return await handle_place_order(
        PlaceOrder("u1", amount, "CNY", "alipay", key), book=InMemoryOrderBook(store), clock=FixedClock(NOW)
    )


async def test_a_signed_charge_payments_refuses_opens_one_refused_charge_case_a_refused_failure_none() -> None:
    store = Store()
    paid_order, _ = await place(store)
    unpaid_order, _ = await place(store, key="k2")

    async def post(body: bytes) -> str:
        result = await handle_callback(
            "sim", body, sign("sim-secret", body, int(NOW)), secrets=SECRETS, payers=DEVELOPMENT_PAYERS,
            uow=lambda: InMemoryPayments(store), clock=FixedClock(NOW),
        )  # fmt: skip
        return result.code

    assert await post(callback_body(paid_order.order_id)) == "applied"
    second_charge = callback_body(paid_order.order_id).replace(b'"tx1"', b'"tx2"')
    assert [await post(second_charge) for _ in range(3)] == ["already_paid"] * 3  # the provider repeats it
    assert await post(callback_body(unpaid_order.order_id, status="failed", amount=700)) == "amount_mismatch"
    assert store.cases.keys() == {f"{paid_order.order_id}/refused_charge"}
    [(case, _)] = store.cases.values()
    assert (case.kind, case.severity, case.user_id) == (CaseKind.REFUSED_CHARGE, CaseSeverity.PAGE, "u1")
    assert case.reason.startswith("sim charged 600 CNY (transaction tx2), refused: order already paid by sim")
    assert case.reason.endswith("; refund it at sim")
    assert await post(callback_body(unpaid_order.order_id, amount=700)) == "amount_mismatch"  # charged, other amount
    assert store.cases.keys() == {f"{o.order_id}/refused_charge" for o in (paid_order, unpaid_order)}


async def test_placing_an_order_publishes_order_placed() -> None:
    store = Store()
    placed, created = await place(store)
    assert created and store.orders[placed.order_id].status == "submitted"
    assert [type(m).__name__ for _, m, _ in store.published] == ["OrderPlaced"]


async def test_the_same_idempotency_key_and_body_give_the_same_order() -> None:
    store = Store()
    first, _ = await place(store, key="k1")
    again, created = await place(store, key="k1")
    assert again.order_id == first.order_id and not created
    assert len(store.orders) == 1


async def test_the_same_idempotency_key_with_another_body_is_refused() -> None:
    store = Store()
    await place(store, key="k1")
    with pytest.raises(IdempotencyConflict, match="different order request"):
        await place(store, key="k1", amount=700)


async def test_a_signed_callback_pays_once_however_often_it_is_delivered_and_only_the_paying_one_says_when() -> None:
    store = Store()
    placed, _ = await place(store)
    body = callback_body(placed.order_id)
    header = sign("sim-secret", body, int(NOW))
    results = await asyncio.gather(
        *(
            handle_callback(
                "sim",
                body,
                header,
                secrets=SECRETS,
                payers=DEVELOPMENT_PAYERS,
                uow=lambda: InMemoryPayments(store),
                clock=FixedClock(NOW),
            )
            for _ in range(5)
        )
    )
    assert sorted(r.code for r in results) == ["applied"] + ["duplicate"] * 4
    paid = [m for t, m, _ in store.published if isinstance(m, PaymentSucceeded)]
    assert len(paid) == 1 and store.published[-1][0] is Topic.PAYMENTS_EVENTS
    # Only the callback that paid says when, and when its order was placed (what payments' callback lateness is
    # measured from).
    assert [(r.paid_at, r.placed_at) for r in results if r.code == "applied"] == [(paid[0].paid_at, placed.created_at)]
    assert {(r.paid_at, r.placed_at) for r in results if r.code == "duplicate"} == {(None, None)}
    assert len(store.callbacks) == 5


async def test_a_failure_callback_publishes_payment_failed() -> None:
    store = Store()
    placed, _ = await place(store)
    body = callback_body(placed.order_id, status="failed")
    result = await handle_callback(
        "sim",
        body,
        sign("sim-secret", body, int(NOW)),
        secrets=SECRETS,
        payers=DEVELOPMENT_PAYERS,
        uow=lambda: InMemoryPayments(store),
        clock=FixedClock(NOW),
    )
    assert result.code == "applied"
    assert isinstance(store.published[-1][1], PaymentFailed)


@pytest.mark.parametrize(
    ("provider", "body", "header", "status", "code"),
    [
        ("nope", b"{}", "t=1,v1=" + "0" * 64, 404, "unknown_provider"),
        ("sim", b"{}", None, 401, "signature_missing"),
        ("sim", b"{}", "bogus", 401, "signature_malformed"),
        ("sim", b"not json", "SIGN", 422, "invalid_callback"),
        ("sim", callback_body("ord_missing"), "SIGN", 404, "unknown_order"),
    ],
)
async def test_every_rejected_callback_gets_a_clear_error_and_is_kept_for_audit(
    provider: str, body: bytes, header: str | None, status: int, code: str
) -> None:
    store = Store()
    if header == "SIGN":
        header = sign("sim-secret", body, int(NOW))
    result = await handle_callback(
        provider,
        body,
        header,
        secrets=SECRETS,
        payers=DEVELOPMENT_PAYERS,
        uow=lambda: InMemoryPayments(store),
        clock=FixedClock(NOW),
    )
    assert (result.status_code, result.code) == (status, code)
    assert len(store.callbacks) == 1 and store.callbacks[0]["outcome"] == "rejected"
    assert store.published == []


def test_a_paid_at_ahead_by_more_than_the_skew_is_clamped_to_the_arrival_and_a_late_one_stands() -> None:
    arrived = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    skew = timedelta(minutes=5)
    ahead = replace(notice(), paid_at=arrived + timedelta(days=2))
    bounded, clamped = domain.bounded(ahead, arrived, skew)
    assert clamped and bounded.paid_at == arrived and bounded.provider_txn_id == ahead.provider_txn_id
    within = replace(notice(), paid_at=arrived + timedelta(minutes=4))
    assert domain.bounded(within, arrived, skew) == (within, False)
    late = replace(notice(), paid_at=arrived - timedelta(hours=6))
    assert domain.bounded(late, arrived, skew) == (late, False)


async def test_a_callback_dated_two_days_ahead_is_paid_at_its_arrival_and_its_audit_keeps_the_stated_time() -> None:
    store = Store()
    placed, _ = await place(store)
    body = json.loads(callback_body(placed.order_id))
    arrival = datetime.fromtimestamp(NOW, UTC)
    body["paid_at"] = (arrival + timedelta(days=2)).isoformat()
    raw = json.dumps(body).encode()
    result = await handle_callback(
        "sim", raw, sign("sim-secret", raw, int(NOW)), secrets=SECRETS, payers=DEVELOPMENT_PAYERS,
        uow=lambda: InMemoryPayments(store), clock=FixedClock(NOW),
    )  # fmt: skip
    assert result.code == "applied" and result.paid_at_clamped
    (paid,) = [m for _, m, _ in store.published if isinstance(m, PaymentSucceeded)]
    assert paid.paid_at == arrival
    (audited,) = store.callbacks
    assert audited["reason"] == f"payment succeeded; {CLAMPED} (the provider said {body['paid_at']})"


def test_a_paid_at_before_the_order_was_placed_is_clamped_to_the_arrival_and_one_after_it_stands() -> None:
    """A provider clock far behind (reset to an old date, a wrong year) dates a payment before its order existed:
    passed on, the reconciler took such a payment (8 days back) for one older than its retention and ignored it, so a
    lost credit was never flagged. Nobody pays an order before it is placed: the arrival stands in for it."""
    arrived = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    placed = arrived - timedelta(minutes=10)
    skew = timedelta(minutes=5)
    behind = replace(notice(), paid_at=arrived - timedelta(days=8))
    assert domain.bounded(behind, arrived, skew, placed) == (replace(behind, paid_at=arrived), True)
    within = replace(notice(), paid_at=placed - timedelta(minutes=4))
    assert domain.bounded(within, arrived, skew, placed) == (within, False)
    after = replace(notice(), paid_at=placed + timedelta(minutes=1))
    assert domain.bounded(after, arrived, skew, placed) == (after, False)
