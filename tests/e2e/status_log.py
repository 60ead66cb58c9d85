"""Reads orders.status and ledger.events back from the broker to judge flags: how many distinct overdue
flags each order got, and when each credit became visible on the broker."""

from collections import defaultdict

from contracts.codec import decode
from contracts.events import OrderStatus, OrderStatusChanged
from harness.simulator.run import credit_publication_times
from tests.kafka_reader import read_all


async def delayed_flags(bootstrap: str, prefix: str) -> dict[str, set[int]]:
    """Order id -> the distinct status sequences at which it was flagged `delayed` (a replayed
    announcement repeats its sequence; a second flag would add another)."""
    records = await read_all(bootstrap, f"{prefix}orders.status")
    seen: dict[str, set[int]] = defaultdict(set)
    for r in records:
        message, _ = decode(r.value, r.headers)
        if isinstance(message, OrderStatusChanged) and message.status is OrderStatus.DELAYED:
            seen[message.order_id].add(message.sequence)
    return dict(seen)


async def judge_flags(
    bootstrap: str, prefix: str, paid_at: dict[str, float], dropped: set[str], threshold_s: float
) -> dict[str, list[str]]:
    """Missed flags (a dropped credit never flagged), false flags (flagged although the credit was on the
    broker before the deadline) and doubled flags, judged against the broker's own record of credits."""
    visible = await credit_publication_times(bootstrap, f"{prefix}ledger.events")
    flags = await delayed_flags(bootstrap, prefix)
    return {
        "missed": sorted(dropped - set(flags)),
        "false": sorted(o for o in flags if visible.get(o, float("inf")) <= paid_at[o] + threshold_s),
        "doubled": sorted(o for o, seqs in flags.items() if len(seqs) > 1),
    }
