"""How the support timeline reads the other services' answers (their JSON shapes as they serve them), forwards the
caller's key, and names a service that does not answer usably instead of failing. The services are stood in for
by httpx's MockTransport: this is the reading, not the services (tests/payments/integration asks the real ledger)."""

from collections.abc import Callable

import httpx

from payments.adapters.neighbours import Neighbours

ORDER = "ord_1"
KEY = "Bearer ck_live_agent"


def answers(routes: dict[str, Callable[[httpx.Request], httpx.Response]]) -> tuple[Neighbours, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return routes[request.url.host](request)

    neighbours = Neighbours(
        ledger_url="http://ledger",
        reconciler_url="http://reconciler",
        notifier_url="http://notifier",
        transport=httpx.MockTransport(handle),
    )
    return neighbours, seen


def ledger(_: httpx.Request) -> httpx.Response:
    entries = [{"account_id": "wallet:u1:CNY", "amount": 600}, {"account_id": "clearing:CNY", "amount": -600}]
    credit = {
        "transaction_id": "t1", "kind": "credit", "created_at": "2026-12-02T12:00:02+00:00", "currency": "CNY",
        "entries": entries,
    }  # fmt: skip
    return httpx.Response(200, json={"order_id": ORDER, "transactions": [credit]})


def reconciler(_: httpx.Request) -> httpx.Response:
    timeline = [
        {"what": "paid", "at": "2026-12-02T12:00:01+00:00"},
        {"what": "credited", "at": "2026-12-02T12:00:03+00:00"},
    ]
    return httpx.Response(200, json={"order_id": ORDER, "status": "credited", "timeline": timeline})


def notifier(_: httpx.Request) -> httpx.Response:
    told = {
        "notification_id": "n1",
        "status": "credited",
        "changed_at": "2026-12-02T12:00:04+00:00",
        "delivery": "delivered",
    }
    return httpx.Response(200, json={"order_id": ORDER, "notifications": [told]})


async def test_each_services_answer_becomes_entries_asked_with_the_callers_own_key() -> None:
    neighbours, seen = answers({"ledger": ledger, "reconciler": reconciler, "notifier": notifier})
    entries, unavailable = await neighbours.timeline(ORDER, KEY)
    assert unavailable == []
    assert sorted((e.at.second, e.source, e.kind) for e in entries) == [
        (1, "reconciler", "reconciler"), (2, "ledger", "credit"), (3, "reconciler", "reconciler"),
        (4, "notifier", "notification"),
    ]  # fmt: skip
    assert {r.headers["Authorization"] for r in seen} == {KEY}
    assert sorted(r.url.path for r in seen) == [
        f"/v1/orders/{ORDER}/entries", f"/v1/orders/{ORDER}/notifications", f"/v1/orders/{ORDER}/timeline",
    ]  # fmt: skip


async def test_a_service_that_refuses_breaks_or_times_out_is_named_and_the_rest_is_kept() -> None:
    def refused(_: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"error": "insufficient_scope", "detail": "lacks support:read"})

    def away(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    neighbours, _ = answers(
        {"ledger": refused, "reconciler": away, "notifier": lambda _: httpx.Response(200, text="<html>")}
    )
    entries, unavailable = await neighbours.timeline(ORDER, KEY)
    assert entries == []
    named = {u.source: u.error for u in unavailable}
    assert set(named) == {"ledger", "reconciler", "notifier"}
    assert "403" in named["ledger"] and "ConnectTimeout" in named["reconciler"] and "cannot read" in named["notifier"]


async def test_an_order_the_reconciler_no_longer_holds_adds_nothing_and_is_not_an_outage() -> None:
    def gone(_: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": "unknown_order", "detail": "not within the retention"})

    neighbours, _ = answers({"ledger": ledger, "reconciler": gone, "notifier": notifier})
    entries, unavailable = await neighbours.timeline(ORDER, KEY)
    assert unavailable == [] and {e.source for e in entries} == {"ledger", "notifier"}


async def test_a_service_without_a_url_is_named_as_not_configured() -> None:
    neighbours = Neighbours(ledger_url=None, reconciler_url=None, notifier_url=None)
    entries, unavailable = await neighbours.timeline(ORDER, KEY)
    assert entries == [] and [u.source for u in unavailable] == ["ledger", "reconciler", "notifier"]
    assert all("not configured" in u.error for u in unavailable)


async def test_an_answer_that_is_not_an_object_is_named_and_a_time_without_a_zone_is_read_as_utc() -> None:
    def naive(_: httpx.Request) -> httpx.Response:
        timeline = [{"what": "paid", "at": "2026-12-02T12:00:01"}]
        return httpx.Response(200, json={"order_id": ORDER, "timeline": timeline})

    def a_list(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[])

    neighbours, _ = answers({"ledger": a_list, "reconciler": naive, "notifier": notifier})
    entries, unavailable = await neighbours.timeline(ORDER, KEY)
    assert [(u.source, "cannot read" in u.error) for u in unavailable] == [("ledger", True)]
    assert sorted(entries, key=lambda e: e.at)[0].at.tzinfo is not None  # sorts beside the zoned ones


async def test_the_ledgers_part_says_how_much_it_moved_in_the_currencys_major_unit() -> None:
    """Staff read "credit of 600" for 600 fen as 600 yuan: the amount is shown as the money it is."""
    neighbours, _ = answers({"ledger": ledger, "reconciler": reconciler, "notifier": notifier})
    entries, _ = await neighbours.timeline(ORDER, KEY)
    assert [e.summary for e in entries if e.source == "ledger"] == ["credit of 6.00 CNY"]
