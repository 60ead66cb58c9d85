"""PostgresSubscriptions: the users' push subscriptions (devices) and chosen locale on PostgreSQL."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from contracts.codec import deterministic_id


@dataclass(frozen=True, slots=True)
class Subscription:
    """One device of one user: a Web Push subscription, or an FCM registration token in `endpoint`."""

    subscription_id: str
    user_id: str
    channel: str
    endpoint: str
    p256dh: str = ""
    auth: str = ""
    created_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        """What the API shows: never the keys, and the endpoint only by its host (it is a bearer secret)."""
        host = self.endpoint.split("/")[2] if "://" in self.endpoint else "fcm-token"
        return {
            "subscription_id": self.subscription_id,
            "channel": self.channel,
            "endpoint_host": host,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


def subscription_id(channel: str, endpoint: str) -> str:
    return deterministic_id("subscription", channel, endpoint)


class PostgresSubscriptions:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def register(self, user_id: str, channel: str, endpoint: str, p256dh: str = "", auth: str = "") -> str:
        """Add or refresh the device; the same endpoint registered again (by this or another user: a shared
        browser changed hands) keeps one row, owned by the latest user."""
        sid = subscription_id(channel, endpoint)
        await self._pool.execute(
            "INSERT INTO push_subscriptions (subscription_id, user_id, channel, endpoint, p256dh, auth)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (subscription_id) DO UPDATE SET"
            " user_id = excluded.user_id, p256dh = excluded.p256dh, auth = excluded.auth, updated_at = now()",
            sid,
            user_id,
            channel,
            endpoint,
            p256dh,
            auth,
        )
        return sid

    async def remove(self, user_id: str, sid: str) -> bool:
        """Forget the device; False if the user has no such subscription."""
        done = await self._pool.fetchval(
            "DELETE FROM push_subscriptions WHERE subscription_id = $1 AND user_id = $2 RETURNING 1", sid, user_id
        )
        return done is not None

    async def of_user(self, user_id: str) -> list[Subscription]:
        rows = await self._pool.fetch(
            "SELECT subscription_id, user_id, channel, endpoint, p256dh, auth, created_at FROM push_subscriptions"
            " WHERE user_id = $1 ORDER BY created_at",
            user_id,
        )
        return [Subscription(**dict(r)) for r in rows]

    async def set_locale(self, user_id: str, locale: str) -> None:
        await self._pool.execute(
            "INSERT INTO user_preferences (user_id, locale) VALUES ($1, $2)"
            " ON CONFLICT (user_id) DO UPDATE SET locale = excluded.locale, updated_at = now()",
            user_id,
            locale,
        )

    async def locale_of(self, user_id: str) -> str | None:
        locale: str | None = await self._pool.fetchval(
            "SELECT locale FROM user_preferences WHERE user_id = $1", user_id
        )
        return locale
