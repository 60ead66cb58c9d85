"""Figures the demo, the bench and the chaos run report, fed crafted inputs: each must show what the system did."""

import asyncio
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx

from harness.bench.machine import UsageSampler
from harness.chaos.checker import History, judge
from harness.chaos.traffic import Ledger
from harness.simulator.receiver import Received
from harness.simulator.run import Truth, score

LEDGER = "http://ledger.test"
PAID_AT = 1_796_378_400.0  # 2026-12-04T10:00:00Z
THRESHOLD = 5.0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _fake_ledger(credits: dict[str, list[float]], wallets: dict[str, int], dropped: list[str]) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/faults":
            return httpx.Response(200, json={"credit_dropped": dropped})
        if path.startswith("/v1/orders/"):
            oid = path.split("/")[3]
            txs = [{"kind": "credit", "created_at": _iso(t)} for t in credits.get(oid, [])]
            return httpx.Response(200, json={"order_id": oid, "transactions": txs})
        if path.startswith("/v1/wallets/"):
            user = path.split("/")[3]
            return httpx.Response(200, json={"user_id": user, "balances": {"CNY": wallets.get(user, 0)}})
        return httpx.Response(404)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


def _received(notes: list[tuple[str, str, float]]) -> Received:
    """(order, status, changed_at) notifications, each delivered once."""
    rec = Received()
    for i, (oid, status, at) in enumerate(notes):
        nid = f"n{i}"
        payload: dict[str, Any] = {"notification_id": nid, "order_id": oid, "status": status, "changed_at": _iso(at)}
        if status == "credited":
            payload["credited_at"] = _iso(at)
        rec.payloads[nid] = payload
        rec.first_seen[nid] = at
        rec.deliveries[nid] = 1
    return rec


async def test_an_order_flagged_overdue_before_its_deadline_counts_as_a_false_flag() -> None:
    """An order flagged 4 s before its deadline (the user told "delayed" while the order was not yet overdue) is a
    false alarm whatever happened to its credit afterwards; the demo's false_flags only compares the credit's time
    with the deadline, so a reconciler that flags early scores 0 false flags and the early flag shows nowhere
    (detection latency reports p50 and max, never the negative minimum): an operator trusting the summary ships a
    reconciler that alarms users and on-call before the deadline."""
    truth = Truth(orders={"ord_a": {"user_id": "u1", "amount": 600, "channel": "card", "paid_at": PAID_AT}})
    truth.paid.add("ord_a")
    credit_at = PAID_AT + THRESHOLD + 2  # the credit really was late ...
    received = _received([("ord_a", "delayed", PAID_AT + 1), ("ord_a", "credited", credit_at)])  # ... flagged at +1 s
    async with _fake_ledger({"ord_a": [credit_at]}, {"u1": 600}, dropped=[]) as client:
        scored = await score(
            truth,
            received,
            ledger_url=LEDGER,
            client=client,
            elapsed_s=10,
            threshold_s=THRESHOLD,
            credit_visible_at={"ord_a": credit_at},
        )
    assert scored["flagged_overdue"] == 1
    assert scored["false_flags"] == 1, (
        f"flagged 4 s before the deadline yet false_flags={scored['false_flags']}, "
        f"detection p50={scored['detection_latency_p50_s']} max={scored['detection_latency_max_s']}"
    )


async def test_a_lost_order_is_visible_in_the_summary_when_another_order_was_credited_and_refunded() -> None:
    """The demo's summary says each paid order was credited or refunded through `paid`, `credited` and
    `refunded` alone: one order credited AND refunded (the user keeps the currency and gets the money back) and
    another neither (paid, nothing in the wallet) add up to credited + refunded == paid with credited_twice 0,
    and `credited demo` exits 0 (cli.py only checks paid == orders and credited_twice). No figure names a lost
    order or a credited-and-refunded one, so both harms pass unseen."""
    orders = {
        "ord_ok": {"user_id": "u1", "amount": 600, "channel": "card", "paid_at": PAID_AT},
        "ord_both": {"user_id": "u2", "amount": 600, "channel": "card", "paid_at": PAID_AT},
        "ord_lost": {"user_id": "u3", "amount": 600, "channel": "card", "paid_at": PAID_AT},
    }
    truth = Truth(orders=orders)
    truth.paid |= set(orders)
    received = _received(
        [
            ("ord_ok", "credited", PAID_AT + 1),
            ("ord_both", "credited", PAID_AT + 1),
            ("ord_both", "refunded", PAID_AT + 9),
        ]
    )
    credits = {"ord_ok": [PAID_AT + 1], "ord_both": [PAID_AT + 1]}
    async with _fake_ledger(credits, {"u1": 600, "u2": 600, "u3": 0}, dropped=[]) as client:
        scored = await score(
            truth,
            received,
            ledger_url=LEDGER,
            client=client,
            elapsed_s=10,
            threshold_s=THRESHOLD,
            credit_visible_at=dict.fromkeys(credits, PAID_AT + 1),
        )
    assert (scored["lost"], scored["credited_and_refunded"]) == (1, 1), scored


async def test_a_status_told_twice_under_two_notification_ids_counts_as_a_duplicate_notification() -> None:
    """The user must hear each status of an order once. The demo's duplicate_notifications counts only repeats of
    one notification id (Received keeps one payload per id), so a notifier that pushes "credited" twice under two
    ids (the user gets two pushes, two inbox entries) scores 0 duplicates."""
    truth = Truth(orders={"ord_a": {"user_id": "u1", "amount": 600, "channel": "card", "paid_at": PAID_AT}})
    truth.paid.add("ord_a")
    received = _received([("ord_a", "credited", PAID_AT + 1), ("ord_a", "credited", PAID_AT + 1.5)])
    async with _fake_ledger({"ord_a": [PAID_AT + 1]}, {"u1": 600}, dropped=[]) as client:
        scored = await score(
            truth,
            received,
            ledger_url=LEDGER,
            client=client,
            elapsed_s=10,
            threshold_s=THRESHOLD,
            credit_visible_at={"ord_a": PAID_AT + 1},
        )
    assert scored["duplicate_notifications"] == 1, (
        f"told 'credited' twice: {scored['notifications_sent']} sent, "
        f"duplicate_notifications={scored['duplicate_notifications']}"
    )


def test_the_chaos_checker_finds_a_user_told_the_same_status_twice_under_two_notification_ids() -> None:
    """The checker promises every paid order's user told once per status, but its only duplicate check is a
    notification id delivered more than once: two deliveries of "credited" for one order under two ids judge ok,
    and `credited chaos` exits 0 on a notifier that tells users twice."""
    paid_at = datetime(2026, 1, 1, tzinfo=UTC)
    order = {
        "order_id": "a",
        "user_id": "u1",
        "amount": 600,
        "currency": "CNY",
        "payment_status": "succeeded",
        "status": "credited",
        "paid_at": paid_at,
    }
    credit = {
        "order_id": "a",
        "transaction_id": "tx-a",
        "kind": "credit",
        "user_id": "u1",
        "amount": 600,
        "currency": "CNY",
    }
    notified = [
        {"order_id": "a", "status": "credited", "notification_id": "n-1"},
        {"order_id": "a", "status": "credited", "notification_id": "n-2"},
    ]
    result = judge(
        History(
            truth=Ledger(orders={"a": {}}, paid={"a"}),
            orders=[order],
            refunds=[],
            credits=[credit],
            wallets=[{"user_id": "u1", "currency": "CNY", "balance": 600, "entries_sum": 600, "expected": 600}],
            notified=notified,
            deliveries={"n-1": 1, "n-2": 1},
            dead_letters=Counter(),
        )
    )
    assert not result["ok"], (
        f"user told 'credited' twice, checker ok; findings: "
        f"{ {k: v['count'] for k, v in result['findings'].items() if v['count']} }"
    )


BURNER = """
import subprocess, sys, time
time.sleep(1.0)
# a child that works and exits, as PostgreSQL's autovacuum workers and short-lived backends do
BURN = "import time\\nend = time.process_time() + 0.8\\nwhile time.process_time() < end: pass"
subprocess.run([sys.executable, "-c", BURN])
print("done", flush=True)
time.sleep(60)
"""


def test_cpu_per_order_counts_the_cpu_of_a_child_process_that_exited_during_the_window() -> None:
    """The bench's CPU per process sums the CPU of the processes alive at each sample (UsageSampler with
    `forking`): a PostgreSQL backend or autovacuum worker, or a service copy, that works during the step and exits
    before its end takes its CPU with it (it moves to the parent's children times, which are not read), and one
    alive at the mark but gone at the end is subtracted. CPU per order and the cores the stack kept busy read low,
    so the report's capacity figures are optimistic."""
    parent = subprocess.Popen([sys.executable, "-c", BURNER], stdout=subprocess.PIPE, text=True)
    try:
        sampler = UsageSampler({"postgres": parent.pid}, forking=frozenset({"postgres"}))
        sampler.mark()
        started = time.monotonic()
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "done"
        used = sampler.since_mark(time.monotonic() - started)["postgres"]["cpu_s"]
    finally:
        parent.kill()
        parent.wait()
    assert used >= 0.6, f"the process tree burned 0.8 s of CPU in the window; the sampler counted {used} s"


async def test_payments_alone_orders_per_s_counts_only_the_orders_payments_placed(monkeypatch: Any) -> None:
    """payments-alone's "payments orders/s placed (alone)" (the httpx path, without wrk) divides every order
    request sent by the burst's time, and its callbacks/s every callback sent: a payments that answers 503 to all
    but one order in a millisecond reports thousands of orders placed a second. The report's headline rate then
    comes from what the load generator intended, not from what payments did."""
    from aiohttp import web

    from harness.bench import payments_alone
    from tests.loopback_http import serving

    placed = 0

    async def orders(request: web.Request) -> web.Response:
        nonlocal placed
        await asyncio.sleep(0.01)  # 200 requests, 16 at a time: the burst takes 0.125 s at least
        if placed >= 1:
            return web.json_response({"error": "not_ready"}, status=503)
        placed += 1
        return web.json_response({"order_id": "ord_1"}, status=201)

    async def callbacks(request: web.Request) -> web.Response:
        return web.json_response({"result": "applied"}, status=200)

    app = web.Application()
    app.router.add_post("/v1/orders", orders)
    app.router.add_post("/v1/psp/sim/callbacks", callbacks)

    async def no_analyze(stack: Any) -> None:
        return None

    monkeypatch.setattr(payments_alone, "_analyze", no_analyze)
    async with serving(app) as port:

        class Config:
            topic_prefix = "t."
            psp_secret = "s"

        class FakeStack:
            config = Config()
            headers: dict[str, str] = {}

            def url(self, name: str) -> str:
                return f"http://127.0.0.1:{port}"

        figures = await payments_alone._with_httpx(FakeStack(), payments_alone.Meter({}), 200, 16)  # type: ignore[arg-type]
    assert figures["order_failures"] == 199
    assert figures["orders_per_s"] <= 1 / 0.125, f"1 order placed, 199 refused: {figures['orders_per_s']} orders/s"


def test_payments_alone_cpu_counts_a_backend_that_exited_during_the_phase() -> None:
    """payments-alone's Meter promises PostgreSQL's CPU "every backend" and payments' every copy, but sums only
    the processes alive at stop(): a backend (or autovacuum worker, or payments copy) that worked during the phase
    and exited before its end is left out, so CPU ms per callback for PostgreSQL reads low. (ledger.bench counts
    the server's reaped children; this meter does not.)"""
    from harness.bench.payments_alone import Meter

    parent = subprocess.Popen([sys.executable, "-c", BURNER], stdout=subprocess.PIPE, text=True)
    try:
        meter = Meter({"postgres": parent.pid})
        meter.start()
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "done"
        used = meter.stop()["postgres"]
    finally:
        parent.kill()
        parent.wait()
    assert used >= 0.6, f"the process tree burned 0.8 s of CPU in the phase; the meter counted {used:.2f} s"


def test_a_bench_step_that_credited_orders_twice_or_left_wallets_wrong_does_not_count_as_kept_up() -> None:
    """The bench's headline (`best`: the fastest step that "kept up") is chosen by kept_up, which looks at
    latency, errors, settlement and rate only: a step whose ledger credited orders twice, whose wallets differ
    from their credits, or whose users got duplicate notifications is still kept up and can become the report's
    "orders/s end to end", a throughput bought by breaking exactly-once."""
    from harness.bench.pipeline import PipelineOptions, kept_up

    figures = {
        "target_rate": 100.0, "orders_per_s": 100.0, "pay_to_credit_p99_s": 0.2, "errors": 0, "unsettled": 0,
        "credited_twice": 7, "balance_mismatches": 7, "duplicate_notifications": 12,
    }  # fmt: skip
    assert not kept_up(figures, PipelineOptions()), "7 orders credited twice, and the step counts as kept up"
