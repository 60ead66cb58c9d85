"""Orders and callbacks handled in groups (one transaction each): every request gets the answer it would have
had alone, in arrival order; a group that fails is retried one request at a time."""

import asyncio
import json
from collections.abc import Sequence

import pytest

from contracts.events import OrderHeld, PaymentSucceeded
from payments.adapters.grouping import GroupCommit
from payments.adapters.http import OrderView, view
from payments.callbacks import Callback, handle_callbacks
from payments.domain import ReviewRule
from payments.handlers import IdempotencyConflict, PlaceOrder, handle_place_orders
from servicekit.signatures import sign
from tests.payments.unit.fakes import DEVELOPMENT_PAYERS, FixedClock, InMemoryOrderBook, InMemoryPayments, Store

NOW = 1_800_000_000.0
SECRETS = {"sim": ["sim-secret"]}


def signed(order_id: str, amount: int = 600, txn: str = "tx1", status: str = "succeeded") -> Callback:
    body = json.dumps(
        {
            "order_id": order_id,
            "provider_txn_id": txn,
            "status": status,
            "amount": amount,
            "currency": "CNY",
            "paid_at": "2026-11-22T08:30:00Z",
        }
    ).encode()
    return Callback("sim", body, sign("sim-secret", body, int(NOW)))


async def place(store: Store, *cmds: PlaceOrder) -> list[object]:
    return list(await handle_place_orders(cmds, book=InMemoryOrderBook(store), clock=FixedClock(NOW)))


async def pay(store: Store, *callbacks: Callback, review: ReviewRule | None = None) -> list[tuple[int, str]]:
    results = await handle_callbacks(
        callbacks,
        secrets=SECRETS,
        payers=DEVELOPMENT_PAYERS,
        uow=lambda: InMemoryPayments(store),
        clock=FixedClock(NOW),
        review=review,
    )
    return [(r.status_code, r.code) for r in results]


async def test_orders_with_the_same_idempotency_key_in_one_group_make_one_order() -> None:
    store = Store()
    same = ("u1", 600, "CNY", "alipay", "k1")  # two requests alike: each is its own PlaceOrder, with its own order id
    first, again, other = await place(
        store, PlaceOrder(*same), PlaceOrder(*same), PlaceOrder("u1", 700, "CNY", "alipay", "k1")
    )
    assert isinstance(first, tuple) and isinstance(again, tuple)
    assert first == (first[0], True) and again == (first[0], False)
    assert isinstance(other, IdempotencyConflict)
    assert len(store.orders) == 1 and len(store.published) == 1


async def test_a_request_handled_again_gets_the_order_it_placed_and_places_no_other() -> None:
    store = Store()
    keyless, keyed = PlaceOrder("u1", 600, "CNY", "alipay"), PlaceOrder("u2", 600, "CNY", "alipay", "k2")
    first = await place(store, keyless, keyed)
    again = await place(store, keyless, keyed)  # as when their group failed after its commit
    assert again == first and [new for _, new in first] == [True, True]  # type: ignore[misc]
    assert len(store.orders) == 2 and len(store.published) == 2


async def test_two_callbacks_for_one_order_in_one_group_decide_in_order() -> None:
    store = Store()
    ((order, _),) = await place(store, PlaceOrder("u1", 600, "CNY", "alipay"))  # type: ignore[misc]
    oid = order.order_id
    assert await pay(store, signed(oid), signed(oid)) == [(200, "applied"), (200, "duplicate")]
    assert await pay(store, signed(oid, txn="tx2"), signed(oid, status="failed")) == [
        (409, "already_paid"),
        (200, "ignored"),
    ]
    assert [type(m) for _, m, _ in store.published[1:]] == [PaymentSucceeded]
    assert len(store.callbacks) == 4


async def test_a_failure_then_a_success_in_one_group_announce_both_in_order() -> None:
    store = Store()
    ((order, _),) = await place(store, PlaceOrder("u1", 600, "CNY", "alipay"))  # type: ignore[misc]
    oid = order.order_id
    assert await pay(store, signed(oid, txn="tx0", status="failed"), signed(oid)) == [(200, "applied")] * 2
    assert [type(m).__name__ for _, m, _ in store.published[1:]] == ["PaymentFailed", "PaymentSucceeded"]
    assert store.orders[oid].payment_status.value == "succeeded"


async def test_bad_callbacks_in_a_group_are_refused_alone_and_kept_for_audit() -> None:
    store = Store()
    ((order, _),) = await place(store, PlaceOrder("u1", 600, "CNY", "alipay"))  # type: ignore[misc]
    tampered = Callback("sim", signed(order.order_id).body.replace(b"600", b"601"), signed(order.order_id).signature)
    answers = await pay(
        store, tampered, signed("ord_missing"), signed(order.order_id, amount=601), signed(order.order_id)
    )
    assert answers == [(401, "signature_mismatch"), (404, "unknown_order"), (422, "amount_mismatch"), (200, "applied")]
    assert [c["outcome"] for c in store.callbacks] == ["rejected", "rejected", "rejected", "paid"]


async def test_the_review_rule_sees_the_group_as_one_transaction_after_another() -> None:
    rule = ReviewRule(expected_s=900, above_minor_otherwise=1000)
    store = Store()
    placed = await place(
        store,
        PlaceOrder("small", 500, "CNY", "alipay"),
        PlaceOrder("small", 5000, "CNY", "alipay"),
        PlaceOrder("big", 5000, "CNY", "alipay"),
        PlaceOrder("big", 6000, "CNY", "alipay"),
    )
    ids = [p[0].order_id for p in placed]  # type: ignore[index]
    await pay(store, *(signed(oid, amount=a) for oid, a in zip(ids, (500, 5000, 5000, 6000), strict=True)), review=rule)
    held = {m.order_id for _, m, _ in store.published if isinstance(m, OrderHeld)}
    # the small order clears its user before that user's big one; the big user's first top-up is held and a held
    # order clears nothing, so the second is a first top-up too
    assert held == {ids[2], ids[3]}


async def test_a_group_that_fails_is_handled_one_by_one_and_only_the_bad_request_fails() -> None:
    calls: list[int] = []

    async def handle(group: Sequence[int]) -> list[int]:
        calls.append(len(group))
        if 13 in group:
            raise ValueError("unlucky")
        return [n * 2 for n in group]

    grouped: GroupCommit[int, int] = GroupCommit(handle, name="numbers", window_s=0.01)
    answers = await asyncio.gather(*(grouped.submit(n) for n in (1, 13, 3)), return_exceptions=True)
    assert answers[0] == 2 and answers[2] == 6
    assert isinstance(answers[1], ValueError)
    assert calls == [3, 1, 1, 1]


async def test_requests_that_arrive_together_share_a_group_and_a_lone_one_waits_at_most_the_window() -> None:
    groups: list[int] = []

    async def handle(group: Sequence[int]) -> list[int]:
        groups.append(len(group))
        return list(group)

    grouped: GroupCommit[int, int] = GroupCommit(handle, name="numbers", window_s=0.002)
    assert await asyncio.gather(*(grouped.submit(n) for n in range(50))) == list(range(50))
    started = asyncio.get_running_loop().time()
    assert await grouped.submit(7) == 7
    assert asyncio.get_running_loop().time() - started < 0.5  # a deadline, not a figure: the window is 2 ms
    assert groups == [50, 1]


@pytest.mark.parametrize("product", [None, "diamonds"])
async def test_the_fast_view_of_an_order_is_the_order_view_of_the_openapi_document(product: str | None) -> None:
    store = Store()
    ((order, _),) = await place(store, PlaceOrder("u1", 600, "CNY", "alipay", product=product))  # type: ignore[misc]
    assert await pay(store, signed(order.order_id)) == [(200, "applied")]
    paid = store.orders[order.order_id]
    for shown in (order, paid):
        assert OrderView.model_validate(view(shown)).model_dump() == view(shown)
        assert list(view(shown)) == list(OrderView.model_fields)
