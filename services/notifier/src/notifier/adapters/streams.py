"""StreamSlots: how many live event streams (server-sent events) may be open at once, per order and in all.

Each open stream holds a feed watcher and a connection for as long as the browser keeps it: a link opened
in a loop would otherwise hold them all. An order has at most `per_order` streams, the process `overall`.

A phone that lost its network without a word (a tunnel, a switch of networks) leaves its stream open here until
the kernel gives up on the connection, many minutes later; refusing the user's next page for it would keep the page
off the live status all that time. So a new stream of an order whose streams are all taken takes the place of the
oldest one opened by the same viewer (the same link's user, the same key): that one is ended, with a `superseded`
event, and a link opened in a loop still holds no more than the order's bound. Streams of other viewers are not
ended for it (a link's holder does not cut the platform's stream, nor the other way round): while they hold all the
order's slots, and whenever the process's bound is reached, the stream is refused with 429, `Retry-After` and
credited's error body naming the limit. A slot is given back when its response ends, however it ended (the
browser went away, the link expired, the server stops), or at once when it is superseded.
"""

import asyncio
from collections.abc import AsyncIterator, Callable

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from servicekit.errors import error_body
from servicekit.http import JsonResponse

RETRY_AFTER_S = 5
"""What a refused browser is told to wait: streams are long-lived, so a slot frees only when one ends."""

SUPERSEDED_GRACE_S = 5.0
"""How long a superseded stream has to send its last event and end; one whose connection takes no more (a peer that
vanished, its buffers full) is cut then, so its watcher and connection go too."""


class Slot:
    """One open stream's place: its order, who opened it (`viewer`), and whether a newer stream took its place."""

    def __init__(self, order_id: str, viewer: str) -> None:
        self.order_id = order_id
        self.viewer = viewer
        self.superseded = asyncio.Event()
        self._wakes: list[asyncio.Event] = []

    def wakes(self, event: asyncio.Event) -> None:
        """Set `event` too when the stream is superseded (the stream's own wake-up: it then ends)."""
        self._wakes.append(event)
        if self.superseded.is_set():
            event.set()

    def supersede(self) -> None:
        self.superseded.set()
        for event in self._wakes:
            event.set()


class StreamSlots:
    """Counts open streams; `take` gives one a slot (superseding the viewer's oldest of a full order) or says which
    bound refuses it."""

    def __init__(self, *, per_order: int, overall: int) -> None:
        self.per_order = per_order
        self.overall = overall
        self._open: dict[str, list[Slot]] = {}
        self._total = 0

    def open_for(self, order_id: str) -> int:
        return len(self._open.get(order_id, ()))

    def take(self, order_id: str, viewer: str) -> Slot | str:
        """A slot for `viewer`'s stream of `order_id`, or the sentence naming the limit that refuses it."""
        held = self._open.get(order_id, [])
        if len(held) >= self.per_order:
            oldest = next((slot for slot in held if slot.viewer == viewer), None)
            if oldest is None:
                return (
                    f"at most {self.per_order} live streams may be open for one order, and others hold them;"
                    " retry later"
                )
            self.give_back(oldest)
            oldest.supersede()
        elif self._total >= self.overall:
            return f"at most {self.overall} live streams may be open on this server; retry later"
        slot = Slot(order_id, viewer)
        self._open.setdefault(order_id, []).append(slot)
        self._total += 1
        return slot

    def give_back(self, slot: Slot) -> None:
        """Free `slot`; once only, whether its stream ended or was superseded first."""
        held = self._open.get(slot.order_id)
        if held is None or slot not in held:
            return
        held.remove(slot)
        if not held:
            del self._open[slot.order_id]
        self._total -= 1

    def refusal(self, detail: str) -> JsonResponse:
        return JsonResponse(
            error_body("too_many_streams", detail), status_code=429, headers={"Retry-After": str(RETRY_AFTER_S)}
        )


class HeldStream(StreamingResponse):
    """A streaming response that gives its slot back once it has been served, completed, failed or cancelled, and
    that is cut `SUPERSEDED_GRACE_S` after its slot was superseded if it has not ended by then."""

    def __init__(
        self, content: AsyncIterator[str], slot: Slot, release: Callable[[Slot], None], **kwargs: object
    ) -> None:
        super().__init__(content, **kwargs)  # type: ignore[arg-type]
        self._slot = slot
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._cut_when_superseded, group.cancel_scope)
                await super().__call__(scope, receive, send)
                group.cancel_scope.cancel()
        finally:
            self._release(self._slot)

    async def _cut_when_superseded(self, serving: anyio.CancelScope) -> None:
        await self._slot.superseded.wait()
        await anyio.sleep(SUPERSEDED_GRACE_S)
        serving.cancel()
