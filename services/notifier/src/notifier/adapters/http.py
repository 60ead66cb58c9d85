"""The notifier's HTTP API: users' push subscriptions, locale and time zone, the development inbox, an order's
notifications. Called by the platform backend on the user's behalf and by support staff, with API keys:
users:write to change a user's devices and locale (and to learn the key devices subscribe with), support:read
to look at them, an inbox or an order's notifications, support:act to send an order's latest notification again."""

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from pydantic import BaseModel, Field, field_validator, model_validator

from contracts.base import OrderId
from notifier import domain
from notifier.adapters.postgres import PostgresNotifications
from notifier.adapters.subscriptions import PostgresSubscriptions
from notifier.adapters.webpush import check_keys, endpoint_allowed, endpoint_malformed
from servicekit.http import STORABLE_TEXT, ApiError, error_responses
from servicekit.identity import Caller, Scope, requires
from servicekit.logs import about

log = logging.getLogger(__name__)

UserIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@-]+$")]
SubscriptionIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
UsersWrite = Annotated[Caller, Depends(requires(Scope.USERS_WRITE))]
SupportRead = Annotated[Caller, Depends(requires(Scope.SUPPORT_READ))]
SupportAct = Annotated[Caller, Depends(requires(Scope.SUPPORT_ACT))]


@dataclass(frozen=True, slots=True)
class PushOptions:
    """What registration checks subscriptions against: the push services allowed, and the channels on."""

    vapid_public_key: str
    allowed_hosts: frozenset[str]
    allow_http: bool
    fcm_enabled: bool


class WebPushKeys(BaseModel):
    p256dh: str = Field(min_length=1, max_length=200, pattern=STORABLE_TEXT)
    auth: str = Field(min_length=1, max_length=100, pattern=STORABLE_TEXT)


class SubscriptionIn(BaseModel):
    """A browser's PushSubscription.toJSON() (channel webpush), or an app's FCM registration token."""

    channel: Literal["webpush", "fcm"] = "webpush"
    endpoint: str | None = Field(None, max_length=2048, pattern=STORABLE_TEXT)
    keys: WebPushKeys | None = None
    token: str | None = Field(None, min_length=1, max_length=4096, pattern=STORABLE_TEXT)

    @model_validator(mode="after")
    def _complete(self) -> "SubscriptionIn":
        if self.channel == "webpush" and (self.endpoint is None or self.keys is None):
            raise ValueError("a webpush subscription needs endpoint and keys.p256dh, keys.auth")
        if self.channel == "fcm" and self.token is None:
            raise ValueError("an fcm subscription needs its registration token")
        return self


class SubscriptionOut(BaseModel):
    user_id: str
    subscription_id: str
    channel: str


class Subscriptions(BaseModel):
    user_id: str
    subscriptions: list[dict[str, Any]]


class LocaleIn(BaseModel):
    locale: str = Field(min_length=2, max_length=35, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
    time_zone: str | None = Field(
        None,
        max_length=64,
        description="IANA time zone (Asia/Taipei) times are shown in; left out, the stored one stays; null clears it.",
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None and not domain.valid_time_zone(value):
            raise ValueError("not an IANA time zone this service knows (e.g. Asia/Taipei)")
        return value


class LocaleOut(BaseModel):
    user_id: str
    locale: str | None
    effective: str = Field(description="The language messages are written in: the chosen one or its fallback.")
    time_zone: str | None = Field(None, description="The user's time zone; unset, times are shown in UTC.")


class InboxView(BaseModel):
    user_id: str
    notifications: list[dict[str, Any]]


class OrderNotifications(BaseModel):
    order_id: str
    notifications: list[dict[str, Any]]


class ResendIn(BaseModel):
    reason: str = Field(
        min_length=1,
        max_length=200,
        pattern=STORABLE_TEXT,
        description="Why the user gets it again (kept with the resend).",
    )


class Resend(BaseModel):
    id: str
    order_id: str
    notification_id: str
    status: str = Field(description="The order status the resent notification tells.")
    reason: str
    by: str = Field(description="The name of the API key that asked.")
    at: str
    deliveries: int = Field(
        description="New deliveries queued: one per device of the user, and the webhook when one is configured;"
        " 0 when there is none (the resend is still recorded)."
    )


class ResendOut(BaseModel):
    resend: Resend


async def register_device(
    subscriptions: PostgresSubscriptions,
    push: PushOptions,
    user_id: str,
    body: SubscriptionIn,
    *,
    order_id: str | None = None,
    link_expires_at: int | None = None,
) -> SubscriptionOut:
    """Register `user_id`'s device (by a platform key: for every order of the user; or by the status link of
    `order_id`: for that order only, until the link expires at `link_expires_at`, unix seconds, as its token says);
    the same one again refreshes it."""
    expires_at = None if link_expires_at is None else datetime.fromtimestamp(link_expires_at, UTC)
    if body.channel == "fcm":
        if not push.fcm_enabled:
            raise ApiError(409, "channel_unavailable", "FCM is not configured on this notifier")
        assert body.token is not None
        sid = await subscriptions.register(user_id, "fcm", body.token, order_id=order_id, expires_at=expires_at)
        return SubscriptionOut(user_id=user_id, subscription_id=sid, channel="fcm")
    assert body.endpoint is not None
    assert body.keys is not None
    malformed = endpoint_malformed(body.endpoint)
    if malformed is not None:
        raise ApiError(422, "invalid_endpoint", f"the endpoint is not a valid URL: {malformed}")
    if not endpoint_allowed(body.endpoint, push.allowed_hosts, allow_http=push.allow_http):
        raise ApiError(422, "push_service_not_allowed", "the endpoint is not on a known Web Push service")
    try:
        check_keys(body.keys.p256dh, body.keys.auth)
    except ValueError as exc:
        raise ApiError(422, "invalid_subscription_keys", str(exc)) from None
    sid = await subscriptions.register(
        user_id, "webpush", body.endpoint, body.keys.p256dh, body.keys.auth, order_id=order_id, expires_at=expires_at
    )
    return SubscriptionOut(user_id=user_id, subscription_id=sid, channel="webpush")


def _resend_id(key_name: str, order_id: str, idempotency_key: str) -> str:
    """The resend id of a request under an Idempotency-Key: the same for the same caller, order and key. The caller
    is its key's name, as payments scopes Idempotency-Keys, so a retry sent with the new key of a rotation
    (`credited keys rotate`) answers the resend the old key asked for instead of sending it again."""
    digest = hashlib.sha256(f"{key_name}\n{order_id}\n{idempotency_key}".encode()).hexdigest()
    return f"rs_{digest[:32]}"


def routes(
    uow: Callable[[], PostgresNotifications], subscriptions: PostgresSubscriptions, push: PushOptions
) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/push/vapid-public-key", tags=["subscriptions"])
    async def vapid_public_key(_: UsersWrite) -> dict[str, str]:
        """The applicationServerKey a browser subscribes with."""
        return {"public_key": push.vapid_public_key}

    @router.put(
        "/users/{user_id}/subscriptions",
        response_model=SubscriptionOut,
        tags=["subscriptions"],
        responses=error_responses(409, 422),
    )
    async def subscribe(user_id: UserIdPath, body: SubscriptionIn, _: UsersWrite) -> SubscriptionOut:
        """Register a device for every order of the user; registering the same endpoint or token again refreshes it
        (and makes a device registered through a status link the user's for every order)."""
        return await register_device(subscriptions, push, user_id, body)

    @router.get("/users/{user_id}/subscriptions", response_model=Subscriptions, tags=["subscriptions"])
    async def list_subscriptions(user_id: UserIdPath, _: SupportRead) -> Subscriptions:
        """The user's devices (keys and full endpoints are never shown); `order_id` names the one order a device
        registered through a status link gets, null for every order, and `expires_at` when that link's right ends
        (null: never)."""
        found = await subscriptions.of_user(user_id)
        return Subscriptions(user_id=user_id, subscriptions=[s.public() for s in found])

    @router.delete(
        "/users/{user_id}/subscriptions/{subscription_id}",
        status_code=204,
        tags=["subscriptions"],
        responses=error_responses(404, 422),
    )
    async def unsubscribe(user_id: UserIdPath, subscription_id: SubscriptionIdPath, _: UsersWrite) -> Response:
        """Forget a device (the browser unsubscribed, the user signed out)."""
        if not await subscriptions.remove(user_id, subscription_id):
            raise ApiError(404, "subscription_not_found", "the user has no such subscription")
        return Response(status_code=204)

    @router.put(
        "/users/{user_id}/locale", response_model=LocaleOut, tags=["subscriptions"], responses=error_responses(422)
    )
    async def set_locale(user_id: UserIdPath, body: LocaleIn, _: UsersWrite) -> LocaleOut:
        """Choose the language of the user's messages (en, zh-CN, zh-TW, zh-HK; others fall back: zh-SG to
        zh-CN, zh-MO to zh-HK, the rest to en) and, optionally, the time zone their times are shown in."""
        keep = "time_zone" not in body.model_fields_set
        await subscriptions.set_preferences(user_id, body.locale, body.time_zone, keep_time_zone=keep)
        return await locale_of(user_id)

    @router.get("/users/{user_id}/locale", response_model=LocaleOut, tags=["subscriptions"])
    async def get_locale(user_id: UserIdPath, _: SupportRead) -> LocaleOut:
        """The user's chosen locale, the language that gives, and their time zone."""
        return await locale_of(user_id)

    async def locale_of(user_id: str) -> LocaleOut:
        chosen = await subscriptions.preferences_of(user_id)
        effective = domain.resolve_locale(chosen.locale)
        return LocaleOut(user_id=user_id, locale=chosen.locale, effective=effective, time_zone=chosen.time_zone)

    @router.get("/inbox/{user_id}", response_model=InboxView, tags=["inbox"])
    async def inbox(user_id: UserIdPath, _: SupportRead, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> InboxView:
        """The user's notifications, newest first: the development inbox."""
        async with uow() as tx:
            return InboxView(user_id=user_id, notifications=await tx.inbox(user_id, limit))

    @router.get("/orders/{order_id}/notifications", response_model=OrderNotifications, tags=["inbox"])
    async def order_notifications(order_id: OrderId, _: SupportRead) -> OrderNotifications:
        """Every notification about one order with the state of each of its deliveries."""
        async with uow() as tx:
            return OrderNotifications(order_id=order_id, notifications=await tx.for_order(order_id))

    @router.post(
        "/orders/{order_id}/notifications/resend",
        status_code=202,
        response_model=ResendOut,
        tags=["inbox"],
        responses=error_responses(404, 409, 422),
    )
    async def resend_notification(
        order_id: OrderId,
        body: ResendIn,
        caller: SupportAct,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
    ) -> ResendOut:
        """Deliver the order's latest status notification to its user again, through the normal durable
        delivery path (new deliveries, retried like any), recorded as a resend with the reason and who asked.
        The same Idempotency-Key from the same key name again (a retry, or two at once) answers the first resend and
        sends nothing more; with another reason it is refused 409 idempotency_key_reused, as payments' acts are."""
        resend_id = None if idempotency_key is None else _resend_id(caller.name, order_id, idempotency_key)
        async with uow() as tx:
            resend = await tx.resend_latest(order_id, body.reason, caller.name, resend_id=resend_id)
        if resend is None:
            raise ApiError(404, "unknown_order", "the notifier has no notification for this order")
        if resend["reason"] != body.reason:  # only a resend under an Idempotency-Key can have another's reason
            raise ApiError(
                409, "idempotency_key_reused", f"Idempotency-Key {idempotency_key!r} was used with another reason"
            )
        log.info(
            "order %s: notification %s resent by %s: %s",
            order_id,
            resend["notification_id"],
            caller.name,
            body.reason,
            extra=about(order_id),
        )
        return ResendOut(resend=Resend(**resend))

    return router
