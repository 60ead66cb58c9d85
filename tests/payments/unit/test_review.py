"""Risk review in payments: which payments are held, and the risk team's release or rejection."""

import json
from datetime import UTC, datetime, timedelta

from contracts.events import OrderHeld, OrderReleased, OrderReviewRejected, PaymentSucceeded
from payments.callbacks import handle_callback
from payments.domain import ReviewRule, ReviewVerdict
from payments.handlers import PlaceOrder, handle_place_order
from payments.review import ReviewDecision, handle_review_decision
from servicekit.signatures import sign
from tests.payments.unit.fakes import DEVELOPMENT_PAYERS, FixedClock, InMemoryOrderBook, InMemoryPayments, Store

NOW = 1_800_000_000.0
SECRETS = {"sim": ["sim-secret"]}
LIMIT = 50_000
RULE = ReviewRule(expected_s=900, above_minor_otherwise=LIMIT)


async def pay(store: Store, amount: int, user: str = "u1", rule: ReviewRule | None = RULE) -> str:
    placed, _ = await handle_place_order(
        PlaceOrder(user, amount, "CNY", "alipay", product="diamonds"),
        book=InMemoryOrderBook(store),
        clock=FixedClock(NOW),
    )
    body = json.dumps(
        {
            "order_id": placed.order_id,
            "provider_txn_id": f"tx-{placed.order_id}",
            "status": "succeeded",
            "amount": amount,
            "currency": "CNY",
            "paid_at": "2026-11-22T08:30:00Z",
        }
    ).encode()
    result = await handle_callback(
        "sim",
        body,
        sign("sim-secret", body, int(NOW)),
        secrets=SECRETS,
        payers=DEVELOPMENT_PAYERS,
        uow=lambda: InMemoryPayments(store),
        clock=FixedClock(NOW),
        review=rule,
    )
    assert result.code == "applied", result
    return placed.order_id


def published(store: Store, order_id: str) -> list[str]:
    return [type(m).__name__ for _, m, _ in store.published if m.order_id == order_id]


async def decide(store: Store, order_id: str, verdict: ReviewVerdict, reason: str = "checked") -> tuple[int, str]:
    result = await handle_review_decision(
        ReviewDecision(order_id, verdict, reason), uow=lambda: InMemoryPayments(store), clock=FixedClock(NOW + 60)
    )
    return result.status_code, result.code


async def test_a_first_top_up_above_the_limit_is_held_with_its_expected_release_and_no_payment_event() -> None:
    store = Store()
    order_id = await pay(store, LIMIT + 1)
    assert published(store, order_id) == ["OrderPlaced", "OrderHeld"]
    held = next(m for _, m, _ in store.published if isinstance(m, OrderHeld))
    now = datetime.fromtimestamp(NOW, UTC)
    assert held.held_at == now and held.expected_release_at == now + timedelta(seconds=RULE.expected_s)
    assert held.product == "diamonds" and held.amount == LIMIT + 1
    assert store.orders[order_id].review_status == "held"


async def test_a_top_up_at_the_limit_or_after_a_cleared_one_is_not_held() -> None:
    store = Store()
    at_limit = await pay(store, LIMIT)
    assert published(store, at_limit) == ["OrderPlaced", "PaymentSucceeded"]
    bigger = await pay(store, LIMIT * 2)
    assert published(store, bigger) == ["OrderPlaced", "PaymentSucceeded"]
    assert published(store, await pay(store, LIMIT * 2, user="u2", rule=None))[-1] == "PaymentSucceeded"


async def test_a_top_up_after_a_held_or_rejected_one_is_still_a_first_top_up() -> None:
    store = Store()
    first = await pay(store, LIMIT + 1)
    assert published(store, await pay(store, LIMIT + 1))[-1] == "OrderHeld"
    assert await decide(store, first, ReviewVerdict.REJECT) == (200, "applied")
    assert published(store, await pay(store, LIMIT + 1))[-1] == "OrderHeld"


async def test_a_release_publishes_order_released_then_the_held_back_payment_once() -> None:
    store = Store()
    order_id = await pay(store, LIMIT + 1)
    assert await decide(store, order_id, ReviewVerdict.RELEASE) == (200, "applied")
    assert await decide(store, order_id, ReviewVerdict.RELEASE) == (200, "duplicate")
    assert published(store, order_id) == ["OrderPlaced", "OrderHeld", "OrderReleased", "PaymentSucceeded"]
    payment = next(m for _, m, _ in store.published if isinstance(m, PaymentSucceeded))
    released = next(m for _, m, _ in store.published if isinstance(m, OrderReleased))
    assert payment.paid_at < released.released_at and payment.product == "diamonds"


async def test_a_rejection_publishes_order_review_rejected_and_no_payment() -> None:
    store = Store()
    order_id = await pay(store, LIMIT + 1)
    assert await decide(store, order_id, ReviewVerdict.REJECT, "stolen card") == (200, "applied")
    assert published(store, order_id) == ["OrderPlaced", "OrderHeld", "OrderReviewRejected"]
    rejection = next(m for _, m, _ in store.published if isinstance(m, OrderReviewRejected))
    assert rejection.reason == "stolen card"


async def test_a_decision_on_an_order_not_under_review_or_decided_otherwise_is_refused() -> None:
    store = Store()
    assert await decide(store, "ord_missing", ReviewVerdict.RELEASE) == (404, "unknown_order")
    plain = await pay(store, LIMIT)
    assert await decide(store, plain, ReviewVerdict.RELEASE) == (409, "not_under_review")
    held = await pay(store, LIMIT + 1, user="u2")
    await decide(store, held, ReviewVerdict.RELEASE)
    assert await decide(store, held, ReviewVerdict.REJECT) == (409, "review_decided")
    assert published(store, held)[-1] == "PaymentSucceeded"
