"""PostgresSubscriptions: the users' push subscriptions (devices), chosen locale and time zone on PostgreSQL."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from contracts.codec import deterministic_id
from notifier.domain import Preferences
from servicekit.http import ApiError
from servicekit.netguard import AddressPolicy, AddressRefused, check_url


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
    order_id: str | None = None
    """The one order whose notifications it gets (registered with that order's status link); None: every order."""
    expires_at: datetime | None = None
    """When the status link it was registered with expires: past it, the device gets nothing; None: no end."""

    def public(self) -> dict[str, Any]:
        """What the API shows: never the keys, and the endpoint only by its host (it is a bearer secret)."""
        host = self.endpoint.split("/")[2] if "://" in self.endpoint else "fcm-token"
        return {
            "subscription_id": self.subscription_id,
            "channel": self.channel,
            "endpoint_host": host,
            "order_id": self.order_id,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


# The device's scope after a registration: the platform's (no order) makes it the user's every order; a status link's
# makes it that order's, unless the same user already has it for every order. A device that changes hands takes the
# new registration's scope whatever it was. Its right lasts as long as the link it was registered with: none ends for
# every order; registered again through a link of the order it follows, by the same user, it lasts until the later of
# the two links expires (an older link still open never shortens it); otherwise until the new link expires.
_REGISTER = """
INSERT INTO push_subscriptions (subscription_id, user_id, channel, endpoint, p256dh, auth, order_id, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (subscription_id) DO UPDATE SET
    user_id = excluded.user_id, p256dh = excluded.p256dh, auth = excluded.auth, updated_at = now(),
    order_id = CASE WHEN push_subscriptions.user_id = excluded.user_id AND push_subscriptions.order_id IS NULL
                    THEN NULL ELSE excluded.order_id END,
    expires_at = CASE WHEN push_subscriptions.user_id = excluded.user_id AND push_subscriptions.order_id IS NULL
                      THEN NULL
                      WHEN push_subscriptions.user_id = excluded.user_id
                           AND push_subscriptions.order_id = excluded.order_id
                      THEN greatest(push_subscriptions.expires_at, excluded.expires_at)
                      ELSE excluded.expires_at END
"""


def subscription_id(channel: str, endpoint: str) -> str:
    return deterministic_id("subscription", channel, endpoint)


class PostgresSubscriptions:
    """Users' devices: at most `max_per_user` registered by the platform for every order, and apart from them at most
    `max_link_per_order` registered through one order's status link, `max_per_user` through all the user's links
    together (409 `too_many_subscriptions` past a bound). A status link is shared further than its user and push
    endpoints are not verified, so whoever holds a link must not fill the slots of the devices the platform registers
    (the user's phone) nor the table. A push endpoint
    is refused at registration (422 `push_endpoint_refused`, saying why) when its URL or any address its host
    resolves to is one the notifier must not connect to (`policy`); delivery checks again at connect time,
    since a name can be re-bound after it was registered."""

    def __init__(
        self, pool: asyncpg.Pool, policy: AddressPolicy, max_per_user: int = 20, max_link_per_order: int = 5
    ) -> None:
        self._pool = pool
        self._policy = policy
        self._max_per_user = max_per_user
        self._max_link_per_order = max_link_per_order

    async def register(
        self,
        user_id: str,
        channel: str,
        endpoint: str,
        p256dh: str = "",
        auth: str = "",
        *,
        order_id: str | None = None,
        expires_at: datetime | None = None,
    ) -> str:
        """Add or refresh the device; the same endpoint registered again (by this or another user: a shared
        browser changed hands) keeps one row, owned by the latest user. With `order_id` (registered through that
        order's status link) the device gets that order's notifications only; without (the platform), every order's.
        A device is one row: registered again through another order's link it follows that order instead, never
        the user's every order; one the user already has for every order (the platform registered it) keeps that.
        `expires_at` (the link's expiry) ends a device's right with its link's: it gets nothing after it, and the
        user's next registration forgets it (it no longer counts against a bound). The platform's devices count against
        `max_per_user`; a link's against `max_link_per_order` for its order and `max_per_user` for all the user's links,
        never against the platform's."""
        if channel == "webpush":
            try:
                await check_url(endpoint, self._policy)
            except AddressRefused as exc:
                raise ApiError(422, "push_endpoint_refused", f"the push endpoint is refused: {exc}") from None
        sid = subscription_id(channel, endpoint)
        async with self._pool.acquire() as conn, conn.transaction():
            # One registration of a user at a time, so two at once cannot both pass the bound.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('push_subscriptions:' || $1, 0))", user_id
            )
            # A device whose status link expired gets nothing and so is never answered 410 (what removes a dead
            # endpoint): without this it would hold one of the user's slots for good, and a working device be refused.
            # Registered again through a fresh link, it comes back.
            await conn.execute(
                "DELETE FROM push_subscriptions WHERE user_id = $1 AND subscription_id <> $2 AND expires_at <= now()",
                user_id,
                sid,
            )
            await self._check_bounds(conn, user_id, sid, order_id)
            await conn.execute(_REGISTER, sid, user_id, channel, endpoint, p256dh, auth, order_id, expires_at)
        return sid

    async def _check_bounds(self, conn: PoolConnectionProxy, user_id: str, sid: str, order_id: str | None) -> None:
        """Refuse (409) a registration past the bound of the scope the device would have: the platform's devices, or
        those of the order's link and of all the user's links. Counted without the device itself (a refresh)."""
        kept = await conn.fetchval(
            "SELECT order_id IS NULL FROM push_subscriptions WHERE subscription_id = $1 AND user_id = $2", sid, user_id
        )
        if order_id is None or kept:  # the platform's device, for every order (a link never narrows it)
            platforms = await conn.fetchval(
                "SELECT count(*) FROM push_subscriptions"
                " WHERE user_id = $1 AND subscription_id <> $2 AND order_id IS NULL",
                user_id,
                sid,
            )
            if platforms >= self._max_per_user:
                detail = f"a user may have at most {self._max_per_user} devices; remove one first"
                raise ApiError(409, "too_many_subscriptions", detail)
            return
        counts = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE order_id = $3), count(*) FROM push_subscriptions"
            " WHERE user_id = $1 AND subscription_id <> $2 AND order_id IS NOT NULL",
            user_id,
            sid,
            order_id,
        )
        assert counts is not None  # an aggregate answers one row
        of_order, of_links = counts
        if of_order >= self._max_link_per_order:
            detail = (
                f"an order's status link may register at most {self._max_link_per_order} devices;"
                " remove one through the link first"
            )
            raise ApiError(409, "too_many_subscriptions", detail)
        if of_links >= self._max_per_user:
            detail = (
                f"a user may have at most {self._max_per_user} devices registered through status links;"
                " remove one first"
            )
            raise ApiError(409, "too_many_subscriptions", detail)

    async def remove(self, user_id: str, sid: str, *, order_id: str | None = None) -> bool:
        """Forget the device; False if the user has no such subscription. With `order_id` (through that order's
        status link) only a device registered through that order's link: never one the platform registered for
        every order, nor one following another order."""
        done = await self._pool.fetchval(
            "DELETE FROM push_subscriptions WHERE subscription_id = $1 AND user_id = $2"
            " AND ($3::text IS NULL OR order_id = $3) RETURNING 1",
            sid,
            user_id,
            order_id,
        )
        return done is not None

    async def of_user(self, user_id: str) -> list[Subscription]:
        rows = await self._pool.fetch(
            "SELECT subscription_id, user_id, channel, endpoint, p256dh, auth, created_at, order_id, expires_at"
            " FROM push_subscriptions"
            " WHERE user_id = $1 ORDER BY created_at",
            user_id,
        )
        return [Subscription(**dict(r)) for r in rows]

    async def set_preferences(self, user_id: str, locale: str, time_zone: str | None, *, keep_time_zone: bool) -> None:
        """Store the user's locale and time zone; `keep_time_zone` leaves a stored zone as it is (the caller
        did not mention one)."""
        await self._pool.execute(
            "INSERT INTO user_preferences (user_id, locale, time_zone) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id) DO UPDATE SET locale = excluded.locale, updated_at = now(),"
            " time_zone = CASE WHEN $4 THEN user_preferences.time_zone ELSE excluded.time_zone END",
            user_id,
            locale,
            time_zone,
            keep_time_zone,
        )

    async def preferences_of(self, user_id: str) -> Preferences:
        row = await self._pool.fetchrow("SELECT locale, time_zone FROM user_preferences WHERE user_id = $1", user_id)
        return Preferences(row["locale"], row["time_zone"]) if row else Preferences()
