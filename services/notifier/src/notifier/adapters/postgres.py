"""PostgresNotifications: queued notifications, their deliveries and the user's inbox on PostgreSQL.

A consumed batch of status changes is queued with one statement. The first delivery of each is born leased to
this process and handed to the delivery worker in memory once the batch commits, so it goes out at once instead
of waiting for the worker's next claim; a crash before it is settled leaves the row to be claimed when the lease
runs out, as any claimed delivery.
"""

import time
import uuid
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from contracts.events import OrderStatus, OrderStatusChanged
from notifier.adapters.queue import Claimed, claimed_from
from notifier.domain import Expiry, Notification, Preferences
from servicekit.uow import PostgresUnitOfWork

# One statement for a batch: the notifications (a redelivered change finds its row and adds nothing), one delivery per
# target each user has now for the order (each push subscription for all the user's orders or, registered through a
# status link, for this order while that link lasts: migration 0009; plus the platform webhook when one is configured),
# and NOTIFYs
# naming the batch's orders (up to NOTIFIED_PER_MESSAGE in each), which wake their status pages. A notification without
# any target is kept for the inbox and the status page only, and so is one older (by its order's sequence) than a status
# of its order recorded before this batch: it is 'superseded', and no delivery tells the user an order went back from,
# say, credited to delayed (within the batch, every status goes out, in sequence order, as below). An expiry is kept
# at EXPIRY_SEQUENCE, before every status change of its order: one that finds any of them is superseded (a payment
# applied to the expired order was credited, and payments.events, consumed apart from orders.status, brought the
# expiry after it). A delivery is born leased (attempt 1, due again when the lease ends) unless an earlier status of its
# order (its expiry included) is still pending for the same target, here or from before: those go out in status order,
# claimed one at a time (see queue.py). Within the batch that
# is the first of its order and target by (sequence, id), a window over the batch: a correlated look at the batch's
# other rows cost each row a scan of them all (170 of 228 ms for a batch of 2,000). The rows tagged 'leased' are the
# deliveries to hand to the worker now.
_ADD = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[])
        WITH ORDINALITY AS i(notification_id, order_id, user_id, status, payload, sequence, n)
), targets AS (
    SELECT i.notification_id, s.subscription_id AS target, s.channel, s.subscription_id, s.endpoint, s.p256dh, s.auth
    FROM input i JOIN push_subscriptions s
        ON s.user_id = i.user_id AND (s.order_id IS NULL OR s.order_id = i.order_id)
           AND (s.expires_at IS NULL OR s.expires_at > now())
    UNION ALL
    SELECT i.notification_id, 'webhook', 'webhook', NULL, NULL, NULL, NULL FROM input i WHERE $7::boolean
), added AS (
    INSERT INTO notifications (notification_id, order_id, user_id, status, payload, sequence, state)
    SELECT i.notification_id, i.order_id, i.user_id, i.status, i.payload::jsonb, i.sequence,
           CASE WHEN EXISTS (SELECT 1 FROM notifications e WHERE e.order_id = i.order_id AND e.sequence > i.sequence)
                THEN 'superseded'
                WHEN EXISTS (SELECT 1 FROM targets t WHERE t.notification_id = i.notification_id)
                THEN 'pending' ELSE 'inbox_only' END
    FROM input i ORDER BY i.n
    ON CONFLICT DO NOTHING RETURNING notification_id, order_id, sequence, created_at, state
), fanned AS (
    SELECT a.notification_id, a.order_id, a.sequence, a.created_at, t.target, t.channel, t.subscription_id,
           t.endpoint, t.p256dh, t.auth,
           NOT EXISTS (
               SELECT 1 FROM deliveries e
               WHERE e.order_id = a.order_id AND e.target = t.target AND e.state = 'pending' AND e.sequence < a.sequence
           ) AND row_number() OVER (PARTITION BY a.order_id, t.target ORDER BY a.sequence, a.notification_id) = 1
           AS leased
    FROM added a JOIN targets t ON t.notification_id = a.notification_id
    WHERE a.state = 'pending'
), inserted AS (
    INSERT INTO deliveries (notification_id, target, channel, order_id, sequence, subscription_id, attempts,
                            next_attempt_at)
    SELECT notification_id, target, channel, order_id, sequence, subscription_id,
           CASE WHEN leased THEN 1 ELSE 0 END,
           CASE WHEN leased THEN clock_timestamp() + make_interval(secs => $9) ELSE now() END
    FROM fanned
), told AS (
    SELECT pg_notify($8, string_agg(order_id, ',')) FROM (
        SELECT order_id, (row_number() OVER (ORDER BY order_id) - 1) / $10 AS chunk
        FROM (SELECT DISTINCT order_id FROM added) AS orders
    ) AS chunked GROUP BY chunk
)
SELECT 'added' AS what, notification_id, NULL AS target, NULL AS channel, NULL AS order_id, NULL::int AS attempts,
       NULL AS subscription_id, NULL AS endpoint, NULL AS p256dh, NULL AS auth, NULL::timestamptz AS queued_at,
       (SELECT count(*) FROM told) AS told, state
FROM added
UNION ALL
SELECT CASE WHEN leased THEN 'leased' ELSE 'pending' END, notification_id, target, channel, order_id, 1,
       subscription_id, endpoint, p256dh, auth, created_at, NULL, NULL
FROM fanned
"""


# The batch's orders, one at a time across instances: two units of work queueing notifications of one order at once (its
# expiry, consumed from payments.events, and its late credit, from orders.status; or one partition's batch held by two
# instances across a rebalance) would each miss the other's rows, not committed yet: both born leased and sent at once,
# the older status free to reach the device last under the same push Topic, or an expiry not superseded by the credit
# beside it. Locked in a statement of its own, so that _ADD's snapshot, taken after the wait, sees what the other
# committed; in the order of the lock keys, so that two batches sharing orders never wait for each other in a circle.
_LOCK_ORDERS = """
SELECT pg_advisory_xact_lock(k) FROM (
    SELECT DISTINCT hashtextextended('notifications:' || o, 0) AS k FROM unnest($1::text[]) AS o ORDER BY k
) AS keys
"""


# A person's resend of the order's latest notification (by sequence, then time; never a superseded one, which the user
# was not told; never the expiry of an order notified of a status since, which comes before it): the resend
# recorded, and one new delivery per target its user has now for the order (as _ADD fans out), due at once for the
# worker to claim. None of the rows when the notifier has no notification for the order; the resend and no delivery
# when its user has no target. None either when the resend id was recorded already (a request repeated under its
# Idempotency-Key): see _RESEND_BY_ID. The notification is locked FOR KEY SHARE (as the resend's foreign key would,
# and no more: the worker's updates of its state do not wait) before it is chosen: one the retention is deleting at that
# moment (notifier.adapters.retention, past its keep time) is waited for, then passed over as gone, instead of failing
# the resend's foreign key once the retention commits (a 500 where the order has no notification left to resend).
_RESEND = """
WITH latest AS (
    SELECT notification_id, order_id, user_id, status, sequence FROM notifications
    WHERE order_id = $1 AND state <> 'superseded'
    ORDER BY sequence DESC, created_at DESC LIMIT 1
    FOR KEY SHARE
), resend AS (
    INSERT INTO resends (resend_id, notification_id, order_id, reason, requested_by)
    SELECT $2, notification_id, order_id, $3, $4 FROM latest
    ON CONFLICT (resend_id) DO NOTHING
    RETURNING resend_id, notification_id, order_id, reason, requested_by, requested_at
), targets AS (
    SELECT s.subscription_id AS target, s.channel, s.subscription_id
    FROM latest l JOIN push_subscriptions s
        ON s.user_id = l.user_id AND (s.order_id IS NULL OR s.order_id = l.order_id)
           AND (s.expires_at IS NULL OR s.expires_at > now())
    UNION ALL
    SELECT 'webhook', 'webhook', NULL WHERE $5::boolean
), inserted AS (
    INSERT INTO deliveries (notification_id, target, channel, order_id, sequence, subscription_id, resend_id)
    SELECT r.notification_id, t.target || '#resend:' || r.resend_id, t.channel, r.order_id, l.sequence,
           t.subscription_id, r.resend_id
    FROM resend r JOIN latest l USING (notification_id) CROSS JOIN targets t
    RETURNING 1
)
SELECT r.*, l.status, (SELECT count(*) FROM inserted) AS deliveries FROM resend r JOIN latest l USING (notification_id)
"""

_RESEND_BY_ID = """
SELECT r.resend_id, r.notification_id, r.order_id, r.reason, r.requested_by, r.requested_at, n.status,
       (SELECT count(*) FROM deliveries d WHERE d.resend_id = r.resend_id) AS deliveries
FROM resends r JOIN notifications n USING (notification_id) WHERE r.resend_id = $1 AND r.order_id = $2
"""

_RESENDS_OF = """
SELECT resend_id, notification_id, reason, requested_by, requested_at FROM resends WHERE order_id = $1
ORDER BY requested_at, resend_id
"""


EXPIRY_SEQUENCE = 0
"""The `sequence` an expiry is stored at (its notification, deliveries and resends), whatever its payload says
(domain.messages.EXPIRED_SEQUENCE, 1): before every status change of its order, which the reconciler numbers from 1.
A payment found after the expiry (payments asks about an order its provider did not know for
PAYMENTS_QUERY_UNKNOWN_ORDER_FOR_S more) is credited with a first status of number 1; stored at 1 too, the expiry tied
with it, and its push refused for a while (429, a device offline) went out after 'credited', under the same push
Topic: the device ended at 'not paid in time, nothing was charged'. Stored before it, the credit waits for the
expiry's delivery to settle (status order), an expiry arriving after the credit is superseded, and a resend of the
expiry still waiting when the credit comes is superseded, as for any older status."""


def stored_sequence(notification: Notification) -> int:
    """Where `notification` sorts among its order's: its status's sequence, an expiry before them all."""
    return EXPIRY_SEQUENCE if notification.status is OrderStatus.EXPIRED else notification.sequence


def _change_from(payload: dict[str, Any], sequence: int) -> OrderStatusChanged | Expiry:
    """What a queued notification's payload says happened to its order (see handlers' payload and expired_payload).
    An expiry's sequence is its payload's (the one the user was told), not the one it is stored at."""
    if payload["status"] == OrderStatus.EXPIRED:
        return Expiry(
            order_id=payload["order_id"],
            user_id=payload["user_id"],
            amount=payload["amount"],
            currency=payload["currency"],
            expired_at=datetime.fromisoformat(payload["changed_at"]),
            sequence=payload["sequence"],
        )
    return OrderStatusChanged.model_validate({"sequence": max(1, sequence), **payload})


NOTIFIED_PER_MESSAGE = 100
"""Order ids in one NOTIFY, separated by commas: 100 of at most 64 characters (contracts.base.OrderId, which has no
comma) stay under PostgreSQL's 8,000-byte payload. One NOTIFY per order cost PostgreSQL about 10 µs each."""


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel on which the ids of orders whose notifications changed are announced, comma
    separated (NOTIFIED_PER_MESSAGE at most in one payload; PostgreSQL keeps 63 bytes of a channel name)."""
    return f"notifier_orders.{schema}"[:63]


class PostgresNotifications(PostgresUnitOfWork):
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        producer: str,
        topic_prefix: str,
        schema: str,
        webhook: bool = False,
        lease_s: float = 30.0,
        on_commit: Callable[[], None],
        on_leased: Callable[[list[Claimed], float], None] = lambda _, __: None,
    ) -> None:
        super().__init__(pool, producer=producer, topic_prefix=topic_prefix, on_commit=on_commit)
        self._channel = notify_channel(schema)
        self._webhook = webhook
        self._lease_s = lease_s
        self._on_leased = on_leased

    async def __aenter__(self) -> "PostgresNotifications":
        await super().__aenter__()
        return self

    async def lock_orders(self, order_ids: Collection[str]) -> None:
        await self.conn.execute(_LOCK_ORDERS, sorted(set(order_ids)))

    async def preferences_of_many(self, user_ids: Sequence[str]) -> dict[str, Preferences]:
        rows = await self.conn.fetch(
            "SELECT user_id, locale, time_zone FROM user_preferences WHERE user_id = ANY($1::text[])", list(user_ids)
        )
        return {r["user_id"]: Preferences(r["locale"], r["time_zone"]) for r in rows}

    async def add_many(self, notifications: Sequence[tuple[Notification, dict[str, Any]]]) -> dict[str, str]:
        payloads = {n.notification_id: payload for n, payload in notifications}
        raw = {notification_id: orjson.dumps(payload) for notification_id, payload in payloads.items()}
        await self.lock_orders({n.order_id for n, _ in notifications})
        # The lease runs from this statement (clock_timestamp(), not the transaction's start, which may be seconds
        # earlier in a long poll), and the worker times it from just before it: it extends the lease before it ends.
        leased_at = time.monotonic()
        rows = await self.conn.fetch(
            _ADD,
            [n.notification_id for n, _ in notifications],
            [n.order_id for n, _ in notifications],
            [n.user_id for n, _ in notifications],
            [n.status.value for n, _ in notifications],
            [raw[n.notification_id].decode() for n, _ in notifications],
            [stored_sequence(n) for n, _ in notifications],
            self._webhook,
            self._channel,
            self._lease_s,
            NOTIFIED_PER_MESSAGE,
        )
        leased = [
            claimed_from(r, raw[r["notification_id"]], payloads[r["notification_id"]])
            for r in rows
            if r["what"] == "leased"
        ]
        if leased:
            self.after_commit(lambda: self._on_leased(leased, leased_at))
        if any(r["what"] == "pending" for r in rows):
            self.wake_on_commit()  # the worker claims it once the earlier status of its order is settled
        return {r["notification_id"]: r["state"] for r in rows if r["what"] == "added"}

    async def changes_for_order(self, order_id: str) -> list[OrderStatusChanged | Expiry]:
        """Every status change of the order the notifier was told about, oldest first, and its expiry if payments
        closed it unpaid (no payment time: not a status change)."""
        rows = await self.conn.fetch(
            "SELECT payload, sequence FROM notifications WHERE order_id = $1 ORDER BY sequence, created_at", order_id
        )
        return [_change_from(orjson.loads(r["payload"]), r["sequence"]) for r in rows]

    async def resend_latest(
        self, order_id: str, reason: str, requested_by: str, *, resend_id: str | None = None
    ) -> dict[str, Any] | None:
        """Deliver the order's latest notification to its user again (a new delivery per target the user has now,
        recorded as a resend with `reason` and who asked); None when the notifier has no notification for it. A
        `resend_id` recorded already (the same request again) is answered with that resend, and sends nothing."""
        chosen = resend_id or f"rs_{uuid.uuid4().hex}"
        row = await self.conn.fetchrow(_RESEND, order_id, chosen, reason, requested_by, self._webhook)
        if row is None and resend_id is not None:
            row = await self.conn.fetchrow(_RESEND_BY_ID, resend_id, order_id)
        if row is None:
            return None
        if row["deliveries"]:
            self.wake_on_commit()
        return {
            "id": row["resend_id"],
            "order_id": row["order_id"],
            "notification_id": row["notification_id"],
            "status": row["status"],
            "reason": row["reason"],
            "by": row["requested_by"],
            "at": row["requested_at"].isoformat(),
            "deliveries": row["deliveries"],
        }

    async def inbox(self, user_id: str, limit: int) -> list[dict[str, Any]]:
        rows = await self.conn.fetch(
            "SELECT payload, state, delivered_at FROM notifications WHERE user_id = $1"
            " ORDER BY created_at DESC LIMIT $2",
            user_id,
            limit,
        )
        return [
            {
                **orjson.loads(r["payload"]),
                "delivery": r["state"],
                "delivered_at": r["delivered_at"].isoformat() if r["delivered_at"] else None,
            }
            for r in rows
        ]

    async def for_order(self, order_id: str) -> list[dict[str, Any]]:
        """The order's notifications, each with its deliveries (a resend's name it) and the resends people asked."""
        rows = await self.conn.fetch(
            "SELECT n.notification_id, n.payload, n.state, coalesce(jsonb_agg(jsonb_build_object("
            "  'target', d.target, 'channel', d.channel, 'state', d.state, 'attempts', d.attempts,"
            "  'last_error', d.last_error, 'delivered_at', d.delivered_at, 'resend_id', d.resend_id)"
            "  ORDER BY d.target) FILTER (WHERE d.target IS NOT NULL), '[]') AS deliveries"
            " FROM notifications n LEFT JOIN deliveries d USING (notification_id)"
            " WHERE n.order_id = $1 GROUP BY n.notification_id ORDER BY n.sequence, n.created_at",
            order_id,
        )
        resends: dict[str, list[dict[str, Any]]] = {}
        for r in await self.conn.fetch(_RESENDS_OF, order_id):
            asked = {"id": r["resend_id"], "reason": r["reason"], "by": r["requested_by"]}
            resends.setdefault(r["notification_id"], []).append({**asked, "at": r["requested_at"].isoformat()})
        return [
            {
                **orjson.loads(r["payload"]),
                "delivery": r["state"],
                "deliveries": orjson.loads(r["deliveries"]),
                "resends": resends.get(r["notification_id"], []),
            }
            for r in rows
        ]
