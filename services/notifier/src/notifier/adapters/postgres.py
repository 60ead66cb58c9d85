"""PostgresNotifications: queued notifications and the user's inbox on PostgreSQL."""

from typing import Any

import orjson

from notifier.domain import Notification
from servicekit.uow import PostgresUnitOfWork


class PostgresNotifications(PostgresUnitOfWork):
    async def __aenter__(self) -> "PostgresNotifications":
        await super().__aenter__()
        return self

    async def add(self, notification: Notification, payload: dict[str, Any]) -> bool:
        added = await self.conn.fetchval(
            "INSERT INTO notifications (notification_id, order_id, user_id, status, payload)"
            " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT DO NOTHING RETURNING 1",
            notification.notification_id,
            notification.order_id,
            notification.user_id,
            notification.status.value,
            orjson.dumps(payload).decode(),
        )
        if added is not None:
            self.wake_on_commit()
        return added is not None

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
            "SELECT payload, state, attempts, last_error FROM notifications WHERE order_id = $1 ORDER BY created_at",
            order_id,
        )
        return [
            {
                **orjson.loads(r["payload"]),
                "delivery": r["state"],
                "attempts": r["attempts"],
                "last_error": r["last_error"],
            }
            for r in rows
        ]
