"""What the demo tells a person: the counts of the run's story (flagged, retried, recovered, refunded, told),
the closing lines of its summary, and the one line a failed start prints. Pure: no I/O."""

import re
from collections.abc import Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StoryCounts:
    """The live table's row: every count is of orders the simulator paid, except `users_told` (notifications)."""

    orders: int
    paid: int
    credited: int
    flagged: int
    retried: int
    recovered: int
    refunded: int
    users_told: int


def story_counts(
    orders: int,
    paid: Set[str],
    told: Mapping[str, Set[str]],
    credited_at: Mapping[str, float],
    retried_at: Mapping[str, float],
    notifications: int,
) -> StoryCounts:
    """`told`: the orders the users were told each status of, by status; `credited_at`: when each credited order
    got its credit; `retried_at`: when each order's first RetryCredit was sent (unix seconds). Set operations
    only, no loop over every order: the live table recounts four times a second while the load runs, on the
    cores the stack is using."""
    flagged = paid & told.get("delayed", set())
    return StoryCounts(
        orders=orders,
        paid=len(paid),
        credited=len(paid & credited_at.keys()),
        flagged=len(flagged),
        retried=len(paid & retried_at.keys()),
        recovered=len(recovered(flagged, credited_at, retried_at)),
        refunded=len(paid & told.get("refunded", set())),
        users_told=notifications,
    )


def recovered(flagged: Set[str], credited_at: Mapping[str, float], retried_at: Mapping[str, float]) -> set[str]:
    """Orders flagged overdue whose credit came at or after their first retry: the retry fixed them."""
    return {oid for oid in flagged if oid in credited_at and oid in retried_at and credited_at[oid] >= retried_at[oid]}


def closing_lines(
    summary: Mapping[str, Any], *, credit_loss: float, threshold_s: float, callback_loss: float = 0.0
) -> list[str]:
    """The few lines that end the human summary: what went wrong, when it was caught, what was done, and
    where to see one affected order."""
    dropped, flagged = summary["credits_dropped"], summary["flagged_overdue"]
    lost = _lost_notifications(summary, callback_loss, threshold_s)
    if dropped == 0 and flagged == 0:
        return [
            f"Nothing went wrong: no credit was dropped (--credit-loss {credit_loss:g}) and no order was flagged.",
            *lost,
        ]
    lines = [
        f"What went wrong: the simulated ledger fault dropped {dropped} of {summary['paid']} credits "
        f"(--credit-loss {credit_loss:g}): paid, money gone, nothing in the wallet.",
        _caught(summary, threshold_s),
        f"What was done: {summary['retried']} retried, {summary['recovered']} credited after the retry, "
        f"{summary['refunded']} refunded; {summary['notifications_sent']} notifications told the users.",
        *lost,
    ]
    if summary["missed_overdue"]:
        lines.append(f"Not caught: {summary['missed_overdue']} dropped credits were never flagged.")
    if summary["false_flags"]:
        lines.append(f"False alarms: {summary['false_flags']} orders flagged although their credit was in time.")
    order = summary.get("affected_order")
    if order:
        lines.append(f"One affected order, {order['order_id']}:")
        lines.append(f"  status page (what the user sees): {order['status_page']}")
        lines.append(f"  timeline (what support sees):     {order['timeline']}")
        if order.get("saved"):
            lines.append(f"  the stack has stopped; both as they were at the end: {order['saved']}")
    return lines


def _lost_notifications(summary: Mapping[str, Any], callback_loss: float, threshold_s: float) -> list[str]:
    """What became of the payments whose notification the provider dropped: found by query, and when."""
    lost = summary.get("callbacks_dropped") or 0
    if not lost:
        return []
    p50, worst = summary["callback_dropped_credit_p50_s"], summary["callback_dropped_credit_max_s"]
    when = "" if p50 is None else f", credited a median {p50:.1f} s and at worst {worst:.1f} s after payment"
    lines = [
        f"Lost notifications: the provider never sent {lost} of {summary['paid_at_provider']} WeChat Pay and Alipay "
        f"payment notifications (--callback-loss {callback_loss:g}).",
        f"Recovered by query: payments asked the provider and found {summary['recovered_by_query']} of them paid"
        f"{when}.",
    ]
    if summary["callback_dropped_flagged"]:
        lines.append(
            f"  {summary['callback_dropped_flagged']} of them were found after their {threshold_s:g} s deadline "
            "and flagged overdue first."
        )
    return lines


def _caught(summary: Mapping[str, Any], threshold_s: float) -> str:
    p50, worst = summary["detection_latency_p50_s"], summary["detection_latency_max_s"]
    when = "" if p50 is None else f", a median {p50:.2f} s and at worst {worst:.2f} s after their deadline"
    flagged = summary["flagged_overdue"]
    return f"When it was caught: {flagged} orders flagged overdue{when} ({threshold_s:g} s after payment)."


_PROCESS = re.compile(r"\b(payments|ledger|reconciler(?:\.\d+)?|notifier|postgres(?:ql)?|tansu)\b", re.IGNORECASE)


def startup_failure(error: BaseException, logs: Path) -> str:
    """One line naming what failed to start and the log to read: the error's first line, and the log of the
    first process it names (the logs directory when it names none)."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    named = _PROCESS.search(first)
    where = logs if named is None else logs / f"{named.group(1).lower().removesuffix('ql')}.log"
    return f"the stack did not start: {first} (log: {where})"
