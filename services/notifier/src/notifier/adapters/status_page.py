"""The order status page: a small page for the user with the order's timeline, kept live by server-sent
events. Plain HTML and JavaScript, no dependencies; en, zh-CN, zh-TW and zh-HK (`?lang=`, else the user's
chosen locale, else the browser's Accept-Language)."""

import asyncio
import html
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query
from fastapi.responses import HTMLResponse, StreamingResponse

from notifier import domain
from notifier.adapters.feed import PostgresOrderFeed
from notifier.adapters.postgres import PostgresNotifications
from notifier.adapters.subscriptions import PostgresSubscriptions
from servicekit.identity import Caller, Scope, requires

OrderIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Lang = Annotated[str | None, Query(max_length=35)]


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
        *,
        heartbeat_s: float = 15.0,
    ) -> None:
        self._uow = uow
        self._subscriptions = subscriptions
        self._feed = feed
        self._heartbeat_s = heartbeat_s
        self._template = resources.files("notifier.adapters").joinpath("status_page.html").read_text("utf-8")

    async def timeline(self, order_id: str, lang: str | None, accept_language: str | None = None) -> domain.Timeline:
        """The order's timeline in the language asked for, else the user's, else the browser's; times in the
        user's time zone if they chose one."""
        async with self._uow() as tx:
            changes = await tx.changes_for_order(order_id)
        chosen = await self._subscriptions.preferences_of(changes[0].user_id) if changes else domain.Preferences()
        lang = lang or chosen.locale
        if lang is None and accept_language:
            lang = accept_language.split(",")[0].split(";")[0].strip() or None
        return domain.timeline(order_id, changes, lang, chosen.time_zone)

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

    async def events(self, order_id: str, lang: str | None) -> AsyncIterator[str]:
        """The timeline now, then again each time it changes; a comment every heartbeat keeps proxies open.
        It ends when the browser goes away (the server's next write fails and cancels it)."""
        yield "retry: 2000\n\n"
        sent: dict[str, Any] | None = None
        with self._feed.watch(order_id) as changed:
            while True:
                changed.clear()
                view = timeline_json(await self.timeline(order_id, lang))
                if view != sent:
                    yield f"id: {view['sequence']}\nevent: timeline\ndata: {orjson.dumps(view).decode()}\n\n"
                    sent = view
                try:
                    await asyncio.wait_for(changed.wait(), self._heartbeat_s)
                except TimeoutError:
                    yield ": keep-alive\n\n"

    def routes(self) -> APIRouter:
        router = APIRouter(tags=["status page"])

        @router.get("/orders/{order_id}", response_class=HTMLResponse)
        async def status_page(
            order_id: OrderIdPath, lang: Lang = None, accept_language: Annotated[str | None, Header()] = None
        ) -> HTMLResponse:
            """The user's page for one order: its timeline, live."""
            timeline = await self.timeline(order_id, lang, accept_language)
            return HTMLResponse(self.page(timeline), headers={"cache-control": "no-store"})

        @router.get("/v1/orders/{order_id}/timeline")
        async def order_timeline(
            order_id: OrderIdPath, _: Annotated[Caller, Depends(requires(Scope.ORDERS_READ))], lang: Lang = None
        ) -> dict[str, Any]:
            """The order's timeline as JSON (what the page shows), for platform backends."""
            return timeline_json(await self.timeline(order_id, lang))

        @router.get("/v1/orders/{order_id}/events", response_class=StreamingResponse)
        async def order_events(order_id: OrderIdPath, lang: Lang = None) -> StreamingResponse:
            """Server-sent events: `timeline` with the whole timeline whenever it changes."""
            return StreamingResponse(
                self.events(order_id, lang),
                media_type="text/event-stream",
                headers={"cache-control": "no-store", "x-accel-buffering": "no"},
            )

        return router
