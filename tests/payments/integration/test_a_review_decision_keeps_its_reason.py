"""A risk review's decision is a person's act on an order: support sees on the order's timeline who decided it and
why, as it sees every support act, on the real PostgreSQL."""

from tests.payments.integration.test_review_api import LIMIT, api, paid_order

__all__ = ["api"]  # the fixture, imported to be used here


async def test_a_release_and_a_rejection_show_on_the_orders_timeline_with_who_decided_and_why(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    released, rejected = [await paid_order(client, f"u-why-{n}", amount=LIMIT + 1) for n in (1, 2)]
    for order_id, decision, reason in (
        (released, "release", "called the user back: their own card"),
        (rejected, "reject", "card reported stolen"),
    ):
        decided = await client.post(f"/v1/orders/{order_id}/review", json={"decision": decision, "reason": reason})
        assert decided.status_code == 200, decided.text
        name = decided.json()["reviewed_by"]["name"]
        view = await client.get(f"/v1/support/orders/{order_id}")
        assert view.status_code == 200, view.text
        [entry] = [e for e in view.json()["timeline"] if e["kind"] in ("order_released", "order_review_rejected")]
        assert name in entry["summary"] and reason in entry["summary"], entry
