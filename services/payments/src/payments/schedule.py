"""When payments asks a provider about an order that has no payment outcome yet: first `delay_s` after it
was placed, then at growing intervals, and last at its payment expiry (per channel), when an order still
unpaid is closed at the provider. Pure: no I/O."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from payments.domain import Order


@dataclass(frozen=True, slots=True)
class ScheduledQuery:
    """Ask `provider` about order `order_id` at `due_at`; it is unpaid for good at `expires_at`."""

    order_id: str
    provider: str
    channel: str
    due_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class QueryPolicy:
    """Which provider takes each channel's payments, and when to ask it.

    The first query is `delay_s` after the order; each later one `backoff` times further from the one before,
    at most `max_interval_s`, and never past the order's expiry, so the last query is at the expiry itself.
    A query that could not be answered after the expiry is asked again on the same rule. An order its provider
    never had at its expiry is expired but asked about for `unknown_order_for_s` more (a trade can still be
    created and paid after it), each time twice as long after the expiry as the last."""

    providers: Mapping[str, str]
    delay_s: float = 30.0
    expiry_s: float = 1800.0
    expiry_by_channel: Mapping[str, float] = field(default_factory=dict)
    backoff: float = 2.0
    max_interval_s: float = 300.0
    unknown_order_for_s: float = 7200.0

    def __post_init__(self) -> None:
        if self.delay_s <= 0 or self.backoff < 1 or self.max_interval_s < self.delay_s:
            raise ValueError("queries need a positive delay, a backoff of at least 1 and a cap not below the delay")

    def expiry(self, channel: str) -> timedelta:
        """How long an order of `channel` may wait for its payment."""
        return timedelta(seconds=self.expiry_by_channel.get(channel, self.expiry_s))

    def first(self, order: Order) -> ScheduledQuery | None:
        """The first query for a new order, or None when no provider we can ask takes its channel."""
        provider = self.providers.get(order.channel)
        if provider is None:
            return None
        expires_at = order.created_at + self.expiry(order.channel)
        due_at = min(order.created_at + timedelta(seconds=self.delay_s), expires_at)
        return ScheduledQuery(order.order_id, provider, order.channel, due_at, expires_at)

    def interval(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th query (1 for the first)."""
        exponent = min(max(attempts, 1), 64)  # past the cap long before; keeps the power finite
        return timedelta(seconds=min(self.delay_s * self.backoff**exponent, self.max_interval_s))

    def next_due(self, attempts: int, now: datetime, expires_at: datetime) -> datetime:
        """When to ask again after the `attempts`-th query, made at `now`: at the expiry at the latest while
        it is ahead, so the order's last query is at its expiry."""
        due = now + self.interval(attempts)
        return min(due, expires_at) if now < expires_at else due

    def after_unknown(self, attempts: int, now: datetime, expires_at: datetime) -> datetime | None:
        """When to ask again about an order its provider said, at `now` past its expiry, it never had: at least
        the usual interval later, and as long after the expiry again as now is (few queries for the many orders
        nobody ever started paying); None once `unknown_order_for_s` past the expiry."""
        if now >= expires_at + timedelta(seconds=self.unknown_order_for_s):
            return None
        return now + max(self.interval(attempts), now - expires_at)
