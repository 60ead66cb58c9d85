"""PostgresDeliveryQueue: the deliveries waiting to go out, claimed under a lease and settled in batches.

A delivery's first attempt is normally born leased with its notification (see PostgresNotifications) and handed
to the worker in memory; the queue is for the rest: retries, statuses waiting for an earlier one of their order,
and leases that ran out. A claim moves the delivery's next_attempt_at to the end of a lease and counts the
attempt, in one short transaction (FOR UPDATE SKIP LOCKED, so two notifier instances never claim one delivery); it
leaves the deliveries of channels the worker has no room for in the queue, so none is counted and left waiting.
Nothing is held open while the push service answers. The worker extends the lease of every delivery it still holds
(its request in flight, or its outcome waiting for the database) half a lease before it ends (`extend`), so another
instance never claims a delivery whose outcome a live instance holds. A worker killed mid-delivery leaves the row
pending: it is due again when the lease runs out, and the device may then see it twice, which the push Topic (the
collapse key) absorbs. Deliveries to one target about one order are claimed in status order, one at a time.
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from notifier.ports import Target
from servicekit.postgres import fetch_planned_now

# A subscription is its device's: the same endpoint registered by another user moves the row to that user (a shared
# browser changed hands, see PostgresSubscriptions.register). A delivery queued for the previous owner then finds
# the row under someone else, and is treated as unsubscribed, as if the row were gone: never sent to the device. So
# is one for an order the device no longer follows (registered since through another order's status link), and one
# for a device whose status link has expired since the delivery was queued (its retry comes after the link's right).
# A delivery is queued when its notification was, or, for a resend, when the person asked for it: a resend of a
# week-old notification gets its own retry_for_s, not none at all. A resend whose notification is no longer its
# order's latest (a newer status was notified since the person asked: migration 0007) comes back `superseded`, to
# be settled so without being sent.
_CLAIM = """
WITH due AS (
    SELECT d.notification_id, d.target, d.subscription_id, d.resend_id FROM deliveries d
    WHERE d.state = 'pending' AND d.next_attempt_at <= now() AND ($3::text[] IS NULL OR d.channel = ANY($3::text[]))
      AND NOT EXISTS (
          SELECT 1 FROM deliveries e
          WHERE e.order_id = d.order_id AND e.target = d.target AND e.state = 'pending' AND e.sequence < d.sequence
      )
    ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries d SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
FROM due JOIN notifications n ON n.notification_id = due.notification_id
LEFT JOIN resends r ON r.resend_id = due.resend_id
LEFT JOIN push_subscriptions s ON s.subscription_id = due.subscription_id AND s.user_id = n.user_id
                               AND (s.order_id IS NULL OR s.order_id = n.order_id)
                               AND (s.expires_at IS NULL OR s.expires_at > now())
LEFT JOIN LATERAL (
    SELECT true AS newer FROM notifications m
    WHERE due.resend_id IS NOT NULL AND m.order_id = n.order_id AND m.sequence > n.sequence LIMIT 1
) AS later ON true
WHERE d.notification_id = due.notification_id AND d.target = due.target
RETURNING d.notification_id, d.target, d.channel, d.order_id, d.attempts, d.subscription_id, n.payload,
          coalesce(r.requested_at, n.created_at) AS queued_at,
          s.subscription_id IS NOT NULL AS subscribed, s.endpoint, s.p256dh, s.auth,
          later.newer IS NOT NULL AS superseded
"""

# Only the claim the worker holds is extended: a delivery claimed since by someone else (its attempts counted again),
# or settled, is left as it is.
_EXTEND = """
UPDATE deliveries d SET next_attempt_at = now() + make_interval(secs => $4)
FROM unnest($1::text[], $2::text[], $3::int[]) AS u(notification_id, target, attempts)
WHERE d.notification_id = u.notification_id AND d.target = u.target
  AND d.state = 'pending' AND d.attempts = u.attempts
RETURNING d.notification_id, d.target
"""

_SETTLE = """
UPDATE deliveries d SET
    state = u.state,
    last_error = u.error,
    next_attempt_at = CASE WHEN u.state = 'pending' THEN now() + make_interval(secs => u.delay)
                           ELSE d.next_attempt_at END,
    delivered_at = CASE WHEN u.state = 'delivered' THEN now() ELSE d.delivered_at END
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[])
     AS u(notification_id, target, state, error, delay)
WHERE d.notification_id = u.notification_id AND d.target = u.target
  AND d.state = 'pending'  -- settled already (a retry after a lease ran out got there first): that stands
"""

# A subscription the push service said is gone is forgotten, unless it belongs to another user by now (the
# endpoint registered again since then by someone else is theirs to keep), follows another order only (a delivery
# for an order it no longer follows is settled 'gone' without reaching the push service) or its link has expired (the
# same: settled 'gone' unsent; the device is kept, listed until a fresh link renews it or the user's next
# registration forgets it).
_FORGET = """
DELETE FROM push_subscriptions s
USING unnest($1::text[], $2::text[]) AS g(subscription_id, notification_id)
JOIN notifications n ON n.notification_id = g.notification_id
WHERE s.subscription_id = g.subscription_id AND s.user_id = n.user_id
  AND (s.order_id IS NULL OR s.order_id = n.order_id) AND (s.expires_at IS NULL OR s.expires_at > now())
"""

# A notification is delivered when some target has it and none failed for good; failed when every target
# is settled and none has it, or one failed for good (it is in the dead-letter topic); superseded when its only
# deliveries left were resends a newer status of its order overtook.
_SUMMARISE = """
UPDATE notifications n SET
    state = s.state,
    delivered_at = CASE WHEN s.state = 'delivered' THEN coalesce(n.delivered_at, now()) ELSE n.delivered_at END,
    last_error = s.last_error
FROM (
    SELECT notification_id,
           CASE WHEN bool_or(state = 'pending') THEN 'pending'
                WHEN bool_or(state = 'failed') THEN 'failed'
                WHEN bool_or(state = 'delivered') THEN 'delivered'
                WHEN bool_or(state = 'superseded') THEN 'superseded'
                ELSE 'failed' END AS state,
           string_agg(target || ': ' || last_error, '; ') FILTER (WHERE state IN ('failed', 'gone')) AS last_error
    FROM deliveries WHERE notification_id = ANY($1::text[]) GROUP BY notification_id
) s
WHERE n.notification_id = s.notification_id
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery a worker holds until its lease ends: the notification, where it goes, which attempt."""

    notification_id: str
    order_id: str
    target_key: str
    target: Target
    attempts: int
    payload: dict[str, Any]
    raw_payload: bytes
    queued_at: datetime
    subscribed: bool
    """False when the delivery was for a subscription that has been removed since, that belongs to another user
    now (its endpoint registered again by them), that follows another order only now, or whose status link has
    expired."""
    superseded: bool = False
    """True for a person's resend whose notification is no longer its order's latest: never sent."""


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one claimed delivery ended: delivered, pending again after `delay_s`, failed, or gone."""

    claimed: Claimed
    state: str
    error: str | None = None
    delay_s: float = 0.0


class PostgresDeliveryQueue:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(self, limit: int, lease_s: float, channels: Collection[str] | None = None) -> list[Claimed]:
        """Up to `limit` due deliveries, each leased for `lease_s` and counted as an attempt; only of `channels` when
        given (those the worker has room for: claimed, the others would wait, their attempt counted and not made).
        Named, not excluded: `channel <> ALL` used no index, and a claim for pushes beside a webhook outage's backlog
        read every due webhook row (200,000 of them in the test); `channel = ANY` walks deliveries_due_by_channel."""
        chosen = None if channels is None else sorted(channels)
        rows = await fetch_planned_now(self._pool, _CLAIM, limit, lease_s, chosen)
        return [claimed_from(r, _raw(r["payload"])) for r in rows]

    async def extend(self, leases: Sequence[Claimed], lease_s: float) -> set[tuple[str, str]]:
        """Lease each of `leases` for `lease_s` more from now, if it is still pending under that claim (its attempts
        unchanged); the (notification id, target) of those extended."""
        if not leases:
            return set()
        rows = await self._pool.fetch(
            _EXTEND,
            [c.notification_id for c in leases],
            [c.target_key for c in leases],
            [c.attempts for c in leases],
            lease_s,
        )
        return {(r["notification_id"], r["target"]) for r in rows}

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        """Record how the deliveries ended, forget the subscriptions that are gone, and update each
        notification's summary state, in one transaction."""
        if not settlements:
            return
        gone = sorted(
            {
                (s.claimed.target.subscription_id, s.claimed.notification_id)
                for s in settlements
                if s.state == "gone" and s.claimed.target.subscription_id is not None
            }
        )
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                _SETTLE,
                [s.claimed.notification_id for s in settlements],
                [s.claimed.target_key for s in settlements],
                [s.state for s in settlements],
                [s.error for s in settlements],
                [s.delay_s for s in settlements],
            )
            if gone:
                await conn.execute(_FORGET, [sid for sid, _ in gone], [nid for _, nid in gone])
            await conn.execute(_SUMMARISE, sorted({s.claimed.notification_id for s in settlements}))

    async def pending(self) -> int:
        """Deliveries not settled yet (leased ones included)."""
        count: int = await self._pool.fetchval("SELECT count(*) FROM deliveries WHERE state = 'pending'")
        return count


def _raw(payload: str | bytes) -> bytes:
    return payload.encode() if isinstance(payload, str) else bytes(payload)


def claimed_from(row: asyncpg.Record, raw_payload: bytes, payload: dict[str, Any] | None = None) -> Claimed:
    """A leased delivery from a row naming it, its target and when it was queued (`queued_at`: its notification's
    time, or its resend's), and its notification's JSON (with the payload it encodes, when the caller has it
    already)."""
    target = Target(
        channel=row["channel"],
        subscription_id=row["subscription_id"],
        endpoint=row["endpoint"] or "",
        p256dh=row["p256dh"] or "",
        auth=row["auth"] or "",
    )
    # A delivery born leased was queued in the same statement as its row was read, for a subscription of its user.
    subscribed = row.get("subscribed", True)
    return Claimed(
        notification_id=row["notification_id"],
        order_id=row["order_id"],
        target_key=row["target"],
        target=target,
        attempts=row["attempts"],
        payload=orjson.loads(raw_payload) if payload is None else payload,
        raw_payload=raw_payload,
        queued_at=row["queued_at"],
        subscribed=row["subscription_id"] is None or subscribed,
        superseded=row.get("superseded", False),
    )
