"""The order status page: a small page for the user with the order's timeline, kept live by server-sent
events. Plain HTML and JavaScript, no dependencies; en, zh-CN, zh-TW and zh-HK (`?lang=`, else the user's
chosen locale, else the browser's Accept-Language).

The page and its event stream open only with the order's signed status link (`?token=`, which payments
answers as the order's `status_url`) or a platform key with orders:read. A missing, expired, tampered or
other order's token gets 404, as an order that does not exist would: the answer says nothing about the order.
"""

import asyncio
import base64
import hashlib
import html
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from notifier import domain
from notifier.adapters.feed import PostgresOrderFeed
from notifier.adapters.http import PushOptions, SubscriptionIdPath, SubscriptionIn, SubscriptionOut, register_device
from notifier.adapters.postgres import PostgresNotifications
from notifier.adapters.streams import HeldStream, Slot, StreamSlots
from notifier.adapters.subscriptions import PostgresSubscriptions
from servicekit.errors import is_transient
from servicekit.http import ApiError, error_responses
from servicekit.identity import Authenticator, Caller, Scope, Unauthenticated, requires
from servicekit.identity.guard import bearer
from servicekit.links import LinkRefused, StatusGrant, StatusLinks

log = logging.getLogger(__name__)

OrderIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Lang = Annotated[str | None, Query(max_length=35)]
Token = Annotated[str | None, Query(max_length=600, description="The order's status-link token (`status_url`).")]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
BrowserZone = Annotated[
    str | None,
    Query(
        description="The IANA time zone of the browser showing the page (`Intl`'s), for a user who chose none: the"
        " times are written in it, labelled with their offset. Display only; an unknown zone is UTC."
    ),
]
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*")


def browser_zone(value: str | None) -> str | None:
    """The zone a browser says it is in, if the zone database knows it; else None (UTC). What the browser sends is
    anything its page's script or its holder puts there: it only chooses how times are written for that page,
    is never stored, and never refuses the page or its stream (no pattern on the query: that would be a 422)."""
    if value is None or len(value) > 64 or not _ZONE_NAME.fullmatch(value):
        return None
    return value if domain.valid_time_zone(value) else None


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who opened the page: the user a status link names (until it expires), or the platform (a key, as long as it is
    still accepted: `still_admitted`)."""

    user_id: str | None
    until: float | None
    still_admitted: Callable[[], Awaitable[bool]] | None = None
    """For a key: whether it is still accepted with orders:read (the authenticator's cache answers; an expired key is
    refused exactly, a revoked one once the cache forgets it). A key's stream ends when it is not."""
    holder: str = ""
    """Whose streams these are, for the order's stream slots (`StreamSlots`): the link's user or the key. A new stream
    of a full order takes the place of its holder's oldest one."""


def _admission(authenticator: Authenticator, key: str) -> Callable[[], Awaitable[bool]]:
    """Whether `key` is still accepted with orders:read: a stream opened with a key ran on after the key expired or
    was revoked, for as long as the browser kept it open."""

    async def still_admitted() -> bool:
        try:
            caller = await authenticator.authenticate(key)
        except Unauthenticated:
            return False
        return Scope.ORDERS_READ in caller.scopes

    return still_admitted


async def _still_watching(viewer: Viewer) -> bool:
    """Whether the viewer may still see the order: its link has not expired, its key is still accepted."""
    if viewer.until is not None and viewer.until <= time.time():
        return False
    return viewer.still_admitted is None or await viewer.still_admitted()


def page_headers(template: str) -> dict[str, str]:
    """The status page's headers: never cached (it is one user's), no referrer (its link is its key), and a policy
    that runs only the page's own script (by its hash: it never changes, the data sits in JSON blocks), connects only
    back here (its event stream) and lets no other site frame it. Sent with the 404 page too."""
    start = template.index("<script>") + len("<script>")
    script = template[start : template.index("</script>", start)]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = (
        f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; connect-src 'self';"
        " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return {
        "cache-control": "no-store",
        "referrer-policy": "no-referrer",
        "content-security-policy": policy,
        "x-frame-options": "DENY",
        "x-content-type-options": "nosniff",
    }


NOT_FOUND_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Not found</title>'
    '<meta name="viewport" content="width=device-width, initial-scale=1"></head><body>'
    "<p>This link does not open an order: it may have expired. Open the order again where you paid for it.</p>"
    '<p lang="zh">此链接无法打开订单，可能已过期。请在付款的应用中重新打开订单。</p></body></html>'  # noqa: RUF001
)
"""What a browser gets for a bare, expired, tampered or someone else's link: the same as for no order."""

SUPERSEDED = 'event: superseded\ndata: {"reason": "a newer stream of this order took its place"}\n\n'
"""A stream's last event when a newer one of the same viewer took its slot (`StreamSlots`)."""


def not_found(order_id: str) -> ApiError:
    return ApiError(404, "unknown_order", f"no order {order_id} for this link")


def timeline_json(timeline: domain.Timeline) -> dict[str, Any]:
    return {
        "order_id": timeline.order_id,
        "locale": timeline.locale,
        "headline": timeline.headline,
        "message": timeline.message,
        "amount": timeline.amount,
        "sequence": timeline.sequence,
        "final": timeline.final,
        "steps": [
            {
                "key": s.key,
                "label": s.label,
                "state": s.state.value,
                "at": s.at.isoformat() if s.at else None,
                "at_text": s.at_text or None,
                "detail": s.detail,
                "tone": s.tone,
            }
            for s in timeline.steps
        ],
    }


def _script_json(value: object) -> str:
    """JSON safe inside a <script> element: no `</script>` can close it early."""
    return orjson.dumps(value).decode().replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class StatusPage:
    def __init__(
        self,
        uow: Callable[[], PostgresNotifications],
        subscriptions: PostgresSubscriptions,
        feed: PostgresOrderFeed,
        links: StatusLinks,
        push: PushOptions,
        slots: StreamSlots,
        *,
        heartbeat_s: float = 15.0,
    ) -> None:
        self.slots = slots
        self._uow = uow
        self._links = links
        self._push = push
        self._subscriptions = subscriptions
        self._feed = feed
        self._heartbeat_s = heartbeat_s
        self._template = resources.files("notifier.adapters").joinpath("status_page.html").read_text("utf-8")
        self._headers = page_headers(self._template)

    def grant(self, order_id: str, token: str | None) -> StatusGrant:
        """What the order's status link lets its holder do, or 404."""
        try:
            return self._links.verify(order_id, token)
        except LinkRefused as refused:
            log.info("status link refused for order %s: %s", order_id, refused.code)
            raise not_found(order_id) from None

    async def owner(self, order_id: str, token: str | None) -> StatusGrant:
        """What the order's status link grants (its user, until when), if the order is that user's as far as the
        notifier knows; else 404."""
        grant = self.grant(order_id, token)
        async with self._uow() as tx:
            changes = await tx.changes_for_order(order_id)
        if any(c.user_id != grant.user_id for c in changes[:1]):
            raise not_found(order_id)
        return grant

    async def viewer(self, request: Request, order_id: str, token: str | None, credentials: Bearer) -> Viewer:
        """The user the order's status link names, or the platform with an orders:read key; else 404."""
        if token is not None:
            grant = self.grant(order_id, token)
            return Viewer(grant.user_id, grant.expires_at, holder=f"link:{grant.user_id}")
        if credentials is not None:
            authenticator: Authenticator = request.app.state.authenticator
            try:
                caller = await authenticator.authenticate(credentials.credentials)
            except Unauthenticated:
                raise not_found(order_id) from None
            if Scope.ORDERS_READ in caller.scopes:
                admitted = _admission(authenticator, credentials.credentials)
                return Viewer(None, None, admitted, holder=f"key:{caller.key_id}")
        raise not_found(order_id)

    async def timeline(
        self,
        order_id: str,
        lang: str | None,
        accept_language: str | None = None,
        *,
        user_id: str | None = None,
        zone: str | None = None,
    ) -> domain.Timeline:
        """The order's timeline in the language asked for, else the user's, else the browser's; times in the
        user's time zone if they chose one, else in the browser's `zone` (`browser_zone`), labelled, else in UTC.
        With `user_id`, only if the order is that user's (else 404)."""
        async with self._uow() as tx:
            changes = await tx.changes_for_order(order_id)
        if user_id is not None and any(c.user_id != user_id for c in changes[:1]):
            raise not_found(order_id)
        chosen = await self._subscriptions.preferences_of(changes[0].user_id) if changes else domain.Preferences()
        lang = lang or chosen.locale
        if lang is None and accept_language:
            lang = accept_language.split(",")[0].split(";")[0].strip() or None
        return domain.timeline(order_id, changes, lang, chosen.time_zone, browser_zone=zone)

    def page(self, timeline: domain.Timeline) -> str:
        text = domain.page_text(timeline.locale)
        values = {
            "lang": timeline.locale,
            "title": html.escape(f"{text['title']} · {timeline.order_id}"),
            "text_json": _script_json(text),
            "timeline_json": _script_json(timeline_json(timeline)),
        }
        page = self._template
        for key, value in values.items():
            page = page.replace("{{" + key + "}}", value)
        return page

    async def events(
        self, order_id: str, lang: str | None, viewer: Viewer, slot: Slot, zone: str | None = None
    ) -> AsyncIterator[str]:
        """The timeline now, then again each time it changes (its times in the browser's `zone` when the user chose
        none); a comment every heartbeat keeps proxies open.
        It ends when the browser goes away (the server's next write fails and cancels it), or when the status
        link it was opened with expires. A change that wakes it after the viewer's right ended (the key expired or
        revoked, the link expired) is not sent: the stream ends instead. A newer stream of the same viewer that
        takes its slot ends it with `superseded` (the page then stops reconnecting: the newer one is live). While
        PostgreSQL is away it stays open, sending keep-alives, and reads again when the feed listens again."""
        yield "retry: 2000\n\n"
        sent: dict[str, Any] | None = None
        with self._feed.watch(order_id) as changed:
            slot.wakes(changed)
            while True:
                if slot.superseded.is_set():
                    yield SUPERSEDED
                    return
                changed.clear()
                try:
                    view: dict[str, Any] | None = timeline_json(
                        await self.timeline(order_id, lang, user_id=viewer.user_id, zone=zone)
                    )
                    watching = view == sent or sent is None or await _still_watching(viewer)
                    admitted = viewer.still_admitted is None or await viewer.still_admitted()
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    # PostgreSQL is away (a failover): the stream stays open on keep-alives and reads again at the
                    # next heartbeat, or as soon as the feed listens again (it wakes every page then), instead of
                    # breaking off with a traceback per open page and sending the browsers to 503s.
                    log.debug("live stream of order %s could not read it, reading again later: %r", order_id, exc)
                    view, watching, admitted = sent, True, True
                if not watching:
                    return
                if view is not None and view != sent:
                    yield f"id: {view['sequence']}\nevent: timeline\ndata: {orjson.dumps(view).decode()}\n\n"
                    sent = view
                wait = self._heartbeat_s if viewer.until is None else min(self._heartbeat_s, viewer.until - time.time())
                if wait <= 0 or not admitted:
                    return
                try:
                    await asyncio.wait_for(changed.wait(), wait)
                except TimeoutError:
                    yield ": keep-alive\n\n"

    def routes(self) -> APIRouter:
        router = APIRouter(tags=["status page"])

        async def viewer(request: Request, order_id: OrderIdPath, credentials: Bearer, token: Token = None) -> Viewer:
            return await self.viewer(request, order_id, token, credentials)

        @router.get("/orders/{order_id}", response_class=HTMLResponse, responses={404: {"description": "Not Found"}})
        async def status_page(
            request: Request,
            order_id: OrderIdPath,
            credentials: Bearer,
            token: Token = None,
            lang: Lang = None,
            accept_language: Annotated[str | None, Header()] = None,
        ) -> HTMLResponse:
            """The user's page for one order: its timeline, live. Opens with the order's status link; any other
            link gets a plain 404 page."""
            headers = self._headers
            try:
                watching = await self.viewer(request, order_id, token, credentials)
                timeline = await self.timeline(order_id, lang, accept_language, user_id=watching.user_id)
            except ApiError as refused:
                if refused.status != 404:
                    raise
                return HTMLResponse(NOT_FOUND_PAGE, status_code=404, headers=headers)
            return HTMLResponse(self.page(timeline), headers=headers)

        @router.get("/v1/orders/{order_id}/timeline")
        async def order_timeline(
            order_id: OrderIdPath, _: Annotated[Caller, Depends(requires(Scope.ORDERS_READ))], lang: Lang = None
        ) -> dict[str, Any]:
            """The order's timeline as JSON (what the page shows), for platform backends."""
            return timeline_json(await self.timeline(order_id, lang))

        @router.get(
            "/v1/orders/{order_id}/events", response_class=StreamingResponse, responses=error_responses(404, 429)
        )
        async def order_events(
            order_id: OrderIdPath,
            watching: Annotated[Viewer, Depends(viewer)],
            lang: Lang = None,
            tz: BrowserZone = None,
        ) -> Response:
            """Server-sent events: `timeline` with the whole timeline whenever it changes; for a user who chose no
            time zone, its times are in the browser's (`tz`), labelled, or in UTC. Opens with the
            order's status link (`?token=`) or an orders:read key. When the order has as many streams open as its
            limit allows, a new one takes the place of the oldest the same link or key opened, which ends with a
            `superseded` event; 429 while other viewers hold them all, or the server has as many as its limit."""
            if watching.user_id is not None:
                await self.timeline(order_id, lang, user_id=watching.user_id)  # another user's order: 404 now
            slot = self.slots.take(order_id, watching.holder)
            if isinstance(slot, str):
                log.info("live stream refused for order %s: %s", order_id, slot)
                return self.slots.refusal(slot)
            return HeldStream(
                self.events(order_id, lang, watching, slot, browser_zone(tz)),
                slot,
                self.slots.give_back,
                media_type="text/event-stream",
                headers={"cache-control": "no-store", "x-accel-buffering": "no"},
            )

        @router.put(
            "/v1/orders/{order_id}/subscriptions",
            response_model=SubscriptionOut,
            tags=["subscriptions"],
            responses=error_responses(404, 409, 422),
        )
        async def subscribe_with_link(
            order_id: OrderIdPath, body: SubscriptionIn, token: Token = None
        ) -> SubscriptionOut:
            """Register a device from the status page: it belongs to the user the order's status link names, and
            gets this order's notifications only (a link is shared further than its user: its holder must not follow
            the user's other orders), until the link expires. The same device through another order's link follows
            that order instead; one the platform registered for all the user's orders keeps them."""
            grant = await self.owner(order_id, token)
            return await register_device(
                self._subscriptions,
                self._push,
                grant.user_id,
                body,
                order_id=order_id,
                link_expires_at=grant.expires_at,
            )

        @router.delete(
            "/v1/orders/{order_id}/subscriptions/{subscription_id}",
            status_code=204,
            tags=["subscriptions"],
            responses=error_responses(404, 422),
        )
        async def unsubscribe_with_link(
            order_id: OrderIdPath, subscription_id: SubscriptionIdPath, token: Token = None
        ) -> Response:
            """Forget a device registered through this order's status link (only that: a link is shared further than
            its user, so its holder must not silence the user's other devices; one the platform registered for every
            order is removed by the platform)."""
            owner = (await self.owner(order_id, token)).user_id
            if not await self._subscriptions.remove(owner, subscription_id, order_id=order_id):
                raise ApiError(
                    404, "subscription_not_found", "no device registered through this order's link has that id"
                )
            return Response(status_code=204)

        return router
