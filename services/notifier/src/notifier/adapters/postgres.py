"""PostgresNotifications: queued notifications, their deliveries and the user's inbox on PostgreSQL."""

from collections.abc import Callable
from typing import Any

import asyncpg
import orjson

from contracts.events import OrderStatusChanged
from notifier.domain import Notification, Preferences
from servicekit.uow import PostgresUnitOfWork

# One statement: the notification, one delivery per target the user has now (each push subscription,
# plus the platform webhook when one is configured), and a NOTIFY that wakes the order's status pages.
# A notification without any target is kept for the inbox and the status page only.
_ADD = """
WITH targets AS (
    SELECT subscription_id AS target, channel, subscription_id FROM push_subscriptions WHERE user_id = $3
    UNION ALL SELECT 'webhook', 'webhook', NULL WHERE $7::boolean
), added AS (
    INSERT INTO notifications (notification_id, order_id, user_id, status, payload, sequence, state)
    SELECT $1, $2, $3, $4, $5::jsonb, $6, CASE WHEN EXISTS (SELECT 1 FROM targets) THEN 'pending' ELSE 'inbox_only' END
    ON CONFLICT DO NOTHING RETURNING notification_id
), fanned_out AS (
    INSERT INTO deliveries (notification_id, target, channel, order_id, sequence, subscription_id)
    SELECT added.notification_id, targets.target, targets.channel, $2, $6, targets.subscription_id
    FROM added, targets RETURNING 1
), told AS (
    SELECT pg_notify($8, $2) FROM added
)
SELECT (SELECT count(*) FROM added) AS added, (SELECT count(*) FROM fanned_out) AS targets,
       (SELECT count(*) FROM told) AS told
"""


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel on which an order id is announced when its notifications change
    (PostgreSQL keeps 63 bytes of a channel name)."""
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
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(pool, producer=producer, topic_prefix=topic_prefix, on_commit=on_commit)
        self._channel = notify_channel(schema)
        self._webhook = webhook

    async def __aenter__(self) -> "PostgresNotifications":
        await super().__aenter__()
        return self

    async def preferences_of(self, user_id: str) -> Preferences:
        row = await self.conn.fetchrow("SELECT locale, time_zone FROM user_preferences WHERE user_id = $1", user_id)
        return Preferences(row["locale"], row["time_zone"]) if row else Preferences()

    async def add(self, notification: Notification, payload: dict[str, Any]) -> bool:
        row = await self.conn.fetchrow(
            _ADD,
            notification.notification_id,
            notification.order_id,
            notification.user_id,
            notification.status.value,
            orjson.dumps(payload).decode(),
            notification.sequence,
            self._webhook,
            self._channel,
        )
        assert row is not None
        if row["added"] and row["targets"]:
            self.wake_on_commit()
        return bool(row["added"])

    async def changes_for_order(self, order_id: str) -> list[OrderStatusChanged]:
        """Every status change of the order the notifier was told about, oldest first."""
        rows = await self.conn.fetch(
            "SELECT payload, sequence FROM notifications WHERE order_id = $1 ORDER BY sequence, created_at", order_id
        )
        return [
            OrderStatusChanged.model_validate({"sequence": max(1, r["sequence"]), **orjson.loads(r["payload"])})
            for r in rows
        ]

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
        rows = await self.conn.fetch(
            "SELECT n.payload, n.state, coalesce(jsonb_agg(jsonb_build_object("
            "  'target', d.target, 'channel', d.channel, 'state', d.state, 'attempts', d.attempts,"
            "  'last_error', d.last_error, 'delivered_at', d.delivered_at) ORDER BY d.target)"
            "  FILTER (WHERE d.target IS NOT NULL), '[]') AS deliveries"
            " FROM notifications n LEFT JOIN deliveries d USING (notification_id)"
            " WHERE n.order_id = $1 GROUP BY n.notification_id ORDER BY n.sequence, n.created_at",
            order_id,
        )
        return [
            {**orjson.loads(r["payload"]), "delivery": r["state"], "deliveries": orjson.loads(r["deliveries"])}
            for r in rows
        ]
