"""Checks the whole history of a chaos run, every order, not a sample: what the traffic did (its ground truth),
what payments, the ledger and the notifier hold in PostgreSQL, what reached the platform's webhook, and what
went to the dead-letter topic.

Every paid order must end credited exactly once or refunded exactly once, never both, with its user told once
per status; wallets must hold exactly what was credited to them. With no credit dropped on purpose and no risk
review, every refund in a chaos run is a refund by mistake: the faults were all infrastructure.
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from harness.chaos.traffic import Ledger
from harness.simulator.receiver import Received
from payments.audit import Credit, PaidOrder, Refund, compare

FINAL = ("credited", "refunded", "needs_support")


@dataclass
class History:
    """Everything the checker reads, as plain rows (so the judging is pure and testable)."""

    truth: Ledger
    orders: list[dict[str, Any]]  # payments.orders
    refunds: list[dict[str, Any]]  # payments.refunds
    credits: list[dict[str, Any]]  # ledger: order_id, transaction_id, kind, user_id, amount, currency
    wallets: list[dict[str, Any]]  # ledger: user_id, currency, balance, entries_sum
    notified: list[dict[str, Any]]  # webhook payloads received: order_id, status, notification_id
    deliveries: dict[str, int]  # notification id -> times it reached the webhook
    dead_letters: Counter[str] = field(default_factory=Counter)  # "source topic: reason" -> records
    delivery_states: dict[str, int] = field(default_factory=dict)  # notifier.deliveries by state


def judge(history: History) -> dict[str, Any]:
    """Findings: counts that must all be zero, each with a few example order ids; and what happened besides."""
    truth = history.truth
    by_order = {o["order_id"]: o for o in history.orders}
    credits = [c for c in history.credits if c["kind"] == "credit"]
    credit_count = Counter(c["order_id"] for c in credits)
    refunded = {r["order_id"] for r in history.refunds if r["status"] == "succeeded"}
    told: dict[str, Counter[str]] = {}
    for payload in history.notified:
        told.setdefault(payload["order_id"], Counter())[payload["status"]] += 1
    paid = truth.paid | {o for o, row in by_order.items() if row["payment_status"] == "succeeded"}
    findings: dict[str, list[str]] = {
        "lost (paid, never credited nor refunded)": sorted(
            o for o in paid if not credit_count[o] and o not in refunded
        ),
        "credited twice": sorted(o for o, n in credit_count.items() if n > 1),
        "refunded by mistake": sorted(refunded & paid),
        "credited and refunded": sorted(refunded & set(credit_count)),
        "paid at the provider, not paid in payments": sorted(
            o for o in truth.paid if by_order.get(o, {}).get("payment_status") != "succeeded"
        ),
        "user not told the final status": sorted(o for o in paid if not _told_final(o, told, credit_count, refunded)),
        "user told contradicting statuses": sorted(o for o, s in told.items() if s["credited"] and s["refunded"]),
        "user told one status twice (two notifications)": sorted(
            o for o, said in told.items() if any(n > 1 for n in said.values())
        ),
        "notification delivered more than once": sorted(
            {p["order_id"] for p in history.notified if history.deliveries.get(p["notification_id"], 0) > 1}
        ),
        "wallet differs from its credits": sorted(
            w["user_id"] for w in history.wallets if w["balance"] != w["entries_sum"] or w["balance"] != w["expected"]
        ),
    }
    findings |= _audit(by_order, credits, history.refunds)
    return {
        "findings": {name: {"count": len(ids), "examples": ids[:5]} for name, ids in findings.items()},
        "harmed_orders": sorted(
            {oid for name, ids in findings.items() if not name.startswith("wallet") for oid in ids}
        ),
        "ok": not any(findings.values()),
        "orders": len(truth.orders),
        "paid": len(paid),
        "credited": sum(1 for n in credit_count.values() if n >= 1),
        "refunded": len(refunded),
        "told_delayed": sum(1 for s in told.values() if s["delayed"]),
        "duplicate_deliveries": sum(n - 1 for n in history.deliveries.values() if n > 1),
        "dead_lettered": dict(history.dead_letters.most_common(10)),
        "dead_lettered_total": sum(history.dead_letters.values()),
        "notifier_deliveries": history.delivery_states,
        "requests_failed": len(truth.failed_requests),
        "requests_given_up": len(truth.gave_up),
    }


def _told_final(order_id: str, told: dict[str, Counter[str]], credits: Counter[str], refunded: set[str]) -> bool:
    said = told.get(order_id, Counter())
    if credits[order_id]:
        return said["credited"] >= 1
    if order_id in refunded:
        return said["refunded"] >= 1
    return any(said[s] for s in FINAL)


def _audit(
    by_order: dict[str, dict[str, Any]], credits: list[dict[str, Any]], refunds: list[dict[str, Any]]
) -> dict[str, list[str]]:
    """The money audit's own comparison on the same rows (payments.audit): the phase-2 audit must agree."""
    paid = [
        PaidOrder(o, row["user_id"], row["amount"], row["currency"], row["paid_at"] or datetime.now(UTC))
        for o, row in by_order.items()
        if row["payment_status"] == "succeeded"
    ]
    report = compare(
        paid,
        [Credit(c["order_id"], c["user_id"], c["amount"], c["currency"], c["transaction_id"]) for c in credits],
        [
            Refund(r["order_id"], by_order.get(r["order_id"], {}).get("amount", 0), "CNY", r["status"] == "succeeded")
            for r in refunds
        ],
        now=datetime.now(UTC),
        grace=timedelta(0),
    )
    out: dict[str, list[str]] = {}
    for finding in report.findings:
        out.setdefault(f"audit: {finding.mismatch}", []).append(finding.order_id)
    return out


async def read_history(dsn: str, schema_prefix: str, truth: Ledger, received: Received) -> History:
    """Every row that matters, from the three services' schemas (read-only queries, one connection)."""
    p, le, n = (f'"{schema_prefix}{s}"' for s in ("payments", "ledger", "notifier"))
    conn = await asyncpg.connect(dsn)
    try:
        orders = await conn.fetch(
            f"SELECT order_id, user_id, amount, currency::text AS currency, payment_status, status, paid_at FROM {p}.orders"  # noqa: S608,E501
        )
        refunds = await conn.fetch(f"SELECT order_id, status, reason FROM {p}.refunds")  # noqa: S608
        credits = await conn.fetch(
            f"SELECT t.order_id, t.transaction_id, t.kind, a.user_id, e.amount, a.currency::text AS currency"  # noqa: S608
            f" FROM {le}.transactions t JOIN {le}.entries e USING (transaction_id)"
            f" JOIN {le}.accounts a USING (account_id) WHERE a.kind = 'wallet'"
        )
        wallets = await conn.fetch(
            f"SELECT a.user_id, a.currency::text AS currency, a.balance,"  # noqa: S608
            f" coalesce((SELECT sum(e.amount) FROM {le}.entries e WHERE e.account_id = a.account_id), 0) AS entries_sum"
            f" FROM {le}.accounts a WHERE a.kind = 'wallet'"
        )
        # What the user got is what reached the webhook; the notifier's own deliveries say what it still owes.
        states = await conn.fetch(f"SELECT state, count(*) AS n FROM {n}.deliveries GROUP BY state")  # noqa: S608
    finally:
        await conn.close()
    history = History(
        truth=truth,
        orders=[dict(r) for r in orders],
        refunds=[dict(r) for r in refunds],
        credits=[dict(r) for r in credits],
        wallets=[],
        notified=list(received.payloads.values()),
        deliveries=dict(received.deliveries),
        delivery_states={r["state"]: r["n"] for r in states},
    )
    history.wallets = _expected_wallets([dict(w) for w in wallets], history)
    return history


def _expected_wallets(wallets: list[dict[str, Any]], history: History) -> list[dict[str, Any]]:
    """Each wallet with what it should hold: the paid amount of every order credited to its user, once each
    (the orders' amounts from payments, not the ledger's own entries), plus compensations granted."""
    amount = {o["order_id"]: o["amount"] for o in history.orders}
    expected: Counter[tuple[str, str]] = Counter()
    seen: set[tuple[str, str]] = set()
    for c in history.credits:
        if (c["order_id"], c["kind"]) in seen:
            continue
        seen.add((c["order_id"], c["kind"]))
        expected[(c["user_id"], c["currency"])] += (
            amount.get(c["order_id"], 0) if c["kind"] == "credit" else c["amount"]
        )
    return [w | {"expected": expected[(w["user_id"], w["currency"])]} for w in wallets]
