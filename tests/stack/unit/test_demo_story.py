"""The demo's story: its counts, its JSON summary (every field it always had, and the new ones), the lines that
end the human summary, and the one line a failed start prints."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from credited.demo import LiveCounts
from harness.simulator.receiver import Received
from harness.simulator.run import Truth, score, settled
from harness.simulator.story import closing_lines, startup_failure, story_counts
from harness.simulator.tail import CommandTail

PAID_AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
THRESHOLD_S = 5.0

FIELDS_BEFORE_THE_STORY = {
    "orders",
    "paid",
    "credited",
    "credited_notified",
    "refunded",
    "credited_twice",
    "balance_mismatches",
    "credits_dropped",
    "flagged_overdue",
    "false_flags",
    "flagged_not_dropped",
    "missed_overdue",
    "notifications_sent",
    "duplicate_notifications",
    "duplicate_callbacks",
    "pay_to_credit_p50_s",
    "pay_to_credit_p99_s",
    "detection_latency_p50_s",
    "detection_latency_p99_s",
    "errors",
    "elapsed_s",
}
"""The JSON summary's fields before the demo told a story: scripts read them, so they stay."""


def at(seconds: float) -> float:
    return (PAID_AT + timedelta(seconds=seconds)).timestamp()


def test_an_order_flagged_and_credited_after_its_retry_is_recovered_and_one_credited_before_it_is_not() -> None:
    paid = {"fixed", "late-anyway", "refunded", "fine"}
    told = {
        "delayed": {"fixed", "late-anyway", "refunded", "not-paid"},
        "credited": {"fixed", "late-anyway", "fine"},
        "refunded": {"refunded"},
    }
    credited_at = {"fixed": at(6), "late-anyway": at(5.1), "fine": at(0.1)}
    retried_at = {"fixed": at(5.2), "late-anyway": at(5.2), "refunded": at(5.2), "not-ours": at(1)}

    counts = story_counts(5, paid, told, credited_at, retried_at, notifications=9)

    assert (counts.orders, counts.paid, counts.credited) == (5, 4, 3)
    assert (counts.flagged, counts.retried, counts.recovered, counts.refunded) == (3, 3, 1, 1)
    assert counts.users_told == 9


def test_the_live_counts_read_each_notification_once_and_agree_with_a_recount_from_all_of_them() -> None:
    truth, received = Truth(), Received()
    retries = CommandTail("127.0.0.1:9", "ledger.commands")  # never started: the test fills first_sent
    for oid in ("a", "b", "c"):
        truth.orders[oid] = {"paid_at": PAID_AT.timestamp()}
        truth.paid.add(oid)
    counts = LiveCounts(truth, received, retries)

    def tell(oid: str, status: str, credited_s: float | None = None) -> None:
        credited = (PAID_AT + timedelta(seconds=credited_s)).isoformat() if credited_s is not None else None
        nid = f"{oid}-{status}"
        received.payloads[nid] = {"notification_id": nid, "order_id": oid, "status": status, "credited_at": credited}

    tell("a", "credited", 0.2)
    tell("b", "delayed")
    first = counts()
    assert (first.credited, first.flagged, first.recovered, first.users_told) == (1, 1, 0, 2)
    assert counts.settled() == settled(truth, received) == 1

    retries.first_sent["b"] = at(5.2)
    tell("b", "credited", 6)
    tell("c", "refunded")
    second = counts()
    assert (second.credited, second.flagged, second.retried, second.recovered) == (2, 1, 1, 1)
    assert (second.refunded, second.users_told) == (1, 4)
    assert counts.settled() == settled(truth, received) == 3


async def test_the_json_summary_keeps_every_field_it_had_and_counts_the_retried_and_the_recovered() -> None:
    truth = Truth()
    received = Received()
    books: dict[str, list[dict[str, str]]] = {}
    for n, (oid, credited_s, flagged) in enumerate((("dropped", 5.3, True), ("normal", 0.2, False))):
        truth.orders[oid] = {"user_id": f"u{n}", "amount": 600, "channel": "card", "paid_at": PAID_AT.timestamp()}
        truth.paid.add(oid)
        credited = (PAID_AT + timedelta(seconds=credited_s)).isoformat()
        books[oid] = [{"kind": "credit", "created_at": credited}]
        if flagged:
            changed = (PAID_AT + timedelta(seconds=THRESHOLD_S + 0.25)).isoformat()
            received.payloads[f"{oid}-1"] = {"order_id": oid, "status": "delayed", "changed_at": changed}
        received.payloads[f"{oid}-2"] = {"order_id": oid, "status": "credited", "credited_at": credited}

    def ledger(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/faults":
            return httpx.Response(200, json={"credit_dropped": ["dropped"]})
        if path.endswith("/entries"):
            return httpx.Response(200, json={"transactions": books[path.split("/")[3]]})
        return httpx.Response(200, json={"balances": {"CNY": 600}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(ledger)) as client:
        summary: dict[str, Any] = await score(
            truth,
            received,
            ledger_url="http://ledger",
            client=client,
            elapsed_s=12.0,
            threshold_s=THRESHOLD_S,
            retried_at={"dropped": at(THRESHOLD_S + 0.3)},
        )

    assert not FIELDS_BEFORE_THE_STORY - summary.keys()
    assert (summary["credits_dropped"], summary["flagged_overdue"], summary["missed_overdue"]) == (1, 1, 0)
    assert (summary["retried"], summary["recovered"]) == (1, 1)
    assert summary["detection_latency_max_s"] == 0.25


def story_summary(**changes: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "paid": 300,
        "credits_dropped": 8,
        "flagged_overdue": 8,
        "missed_overdue": 0,
        "false_flags": 0,
        "retried": 8,
        "recovered": 7,
        "refunded": 1,
        "notifications_sent": 316,
        "detection_latency_p50_s": 0.0685,
        "detection_latency_max_s": 0.138,
        "affected_order": {
            "order_id": "ord_1",
            "status_page": "http://127.0.0.1:8104/orders/ord_1",
            "timeline": "http://127.0.0.1:8103/v1/orders/ord_1/timeline",
            "saved": "/run/affected-order/ord_1.*",
        },
    }
    return {**summary, **changes}


def test_the_story_says_what_went_wrong_when_it_was_caught_what_was_done_and_where_to_see_one_order() -> None:
    lines = closing_lines(story_summary(), credit_loss=0.03, threshold_s=THRESHOLD_S)
    text = "\n".join(lines)

    assert lines[0].startswith("What went wrong: the simulated ledger fault dropped 8 of 300 credits")
    assert lines[1].startswith("When it was caught: 8 orders flagged overdue, a median 0.07 s and at worst 0.14 s")
    assert lines[2] == (
        "What was done: 8 retried, 7 credited after the retry, 1 refunded; 316 notifications told the users."
    )
    assert "http://127.0.0.1:8104/orders/ord_1" in text
    assert "http://127.0.0.1:8103/v1/orders/ord_1/timeline" in text
    assert "Not caught" not in text and "False alarms" not in text


def test_the_story_owns_up_to_dropped_credits_never_flagged_and_to_false_alarms() -> None:
    lines = closing_lines(story_summary(missed_overdue=2, false_flags=1), credit_loss=0.03, threshold_s=THRESHOLD_S)

    assert "Not caught: 2 dropped credits were never flagged." in lines
    assert "False alarms: 1 orders flagged although their credit was in time." in lines


def test_a_run_without_faults_says_nothing_went_wrong_in_one_line() -> None:
    quiet = story_summary(credits_dropped=0, flagged_overdue=0, retried=0, recovered=0, affected_order=None)

    assert closing_lines(quiet, credit_loss=0, threshold_s=THRESHOLD_S) == [
        "Nothing went wrong: no credit was dropped (--credit-loss 0) and no order was flagged."
    ]


def test_a_failed_start_is_one_line_naming_what_failed_and_its_log() -> None:
    logs = Path("/run/logs")
    exited = RuntimeError("ledger exited while waiting for ledger at http://127.0.0.1:8102/healthz:\nTraceback ...")
    broker = TimeoutError("timed out after 30s waiting for Tansu on port 5555")
    taken = RuntimeError("port 8101 for payments is in use (another stack? set CREDITED_PORT_BASE)")
    database = RuntimeError("postgres exited while waiting for PostgreSQL on port 5432:\nFATAL ...")

    lines = [startup_failure(error, logs) for error in (exited, broker, taken, database, OSError())]

    assert all("\n" not in line for line in lines)
    assert lines[0].endswith("(log: /run/logs/ledger.log)") and "ledger exited while waiting" in lines[0]
    assert lines[1].endswith("(log: /run/logs/tansu.log)")
    assert "port 8101 for payments is in use" in lines[2] and lines[2].endswith("(log: /run/logs/payments.log)")
    assert lines[3].endswith("(log: /run/logs/postgres.log)")
    assert lines[4] == "the stack did not start: OSError (log: /run/logs)"


async def test_the_json_summary_counts_the_payments_whose_notification_was_dropped_and_what_became_of_them() -> None:
    truth, received = Truth(), Received()
    # (order, seconds from payment to credit, flagged overdue, its notification dropped, its credit dropped)
    plan = (
        ("found-in-time", 2.6, False, True, False),
        ("found-late", 5.4, True, True, False),
        ("both-faults", 5.3, True, True, True),
        ("notified", 0.2, False, False, False),
    )
    books: dict[str, list[dict[str, str]]] = {}
    for n, (oid, credited_s, flagged, lost, _) in enumerate(plan):
        truth.orders[oid] = {"user_id": f"u{n}", "amount": 600, "channel": "wechat", "paid_at": PAID_AT.timestamp()}
        truth.paid.add(oid)
        truth.at_provider.add(oid)
        if lost:
            truth.callback_dropped.add(oid)
        credited = (PAID_AT + timedelta(seconds=credited_s)).isoformat()
        books[oid] = [{"kind": "credit", "created_at": credited}]
        if flagged:
            changed = (PAID_AT + timedelta(seconds=THRESHOLD_S + 0.1)).isoformat()
            received.payloads[f"{oid}-1"] = {"order_id": oid, "status": "delayed", "changed_at": changed}
        received.payloads[f"{oid}-2"] = {"order_id": oid, "status": "credited", "credited_at": credited}
    credit_dropped = [oid for oid, *_, dropped in plan if dropped]

    def ledger(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/faults":
            return httpx.Response(200, json={"credit_dropped": credit_dropped})
        if path.endswith("/entries"):
            return httpx.Response(200, json={"transactions": books[path.split("/")[3]]})
        return httpx.Response(200, json={"balances": {"CNY": 600}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(ledger)) as client:
        summary: dict[str, Any] = await score(
            truth,
            received,
            ledger_url="http://ledger",
            client=client,
            elapsed_s=12.0,
            threshold_s=THRESHOLD_S,
            recovered_by_query=3,
        )

    assert (summary["paid_at_provider"], summary["callbacks_dropped"], summary["recovered_by_query"]) == (4, 3, 3)
    assert summary["callback_dropped_credited"] == 3
    # How long it took, of those whose credit was not dropped too (that one waited for the retry).
    assert (summary["callback_dropped_credit_p50_s"], summary["callback_dropped_credit_max_s"]) == (4.0, 5.4)
    # Found after its deadline: flagged in earnest, so neither a flag without a fault nor a false alarm.
    assert summary["callback_dropped_flagged"] == 1
    assert (summary["flagged_overdue"], summary["flagged_not_dropped"], summary["false_flags"]) == (2, 0, 0)


def test_the_story_says_how_many_lost_notifications_were_recovered_by_query_and_how_long_after_payment() -> None:
    lost = {
        "paid_at_provider": 150,
        "callbacks_dropped": 15,
        "recovered_by_query": 15,
        "callback_dropped_credit_p50_s": 2.84,
        "callback_dropped_credit_max_s": 3.61,
        "callback_dropped_flagged": 0,
    }

    lines = closing_lines(story_summary(**lost), credit_loss=0.03, threshold_s=THRESHOLD_S, callback_loss=0.1)
    late = closing_lines(
        story_summary(**lost | {"callback_dropped_flagged": 2}), credit_loss=0.03, threshold_s=THRESHOLD_S
    )

    assert lines[0].startswith("What went wrong: the simulated ledger fault dropped 8 of 300 credits")
    assert (
        "Lost notifications: the provider never sent 15 of 150 WeChat Pay and Alipay payment notifications "
        "(--callback-loss 0.1)." in lines
    )
    assert (
        "Recovered by query: payments asked the provider and found 15 of them paid, credited a median 2.8 s and at "
        "worst 3.6 s after payment." in lines
    )
    assert not any("flagged overdue first" in line for line in lines)
    assert "  2 of them were found after their 5 s deadline and flagged overdue first." in late
