"""StreamSlots: how many live event streams (server-sent events) may be open at once, per order and in all.

Each open stream holds a feed watcher and a connection for as long as the browser keeps it: a link opened
in a loop would otherwise hold them all. Past a bound the stream is refused with 429, `Retry-After` and
credited's error body naming the limit. A slot is given back when its response ends, however it ended (the
browser went away, the link expired, the server stops): `HeldStream` releases it after serving.
"""

from collections import Counter
from collections.abc import AsyncIterator, Callable

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from servicekit.errors import error_body
from servicekit.http import JsonResponse

RETRY_AFTER_S = 5
"""What a refused browser is told to wait: streams are long-lived, so a slot frees only when one ends."""


class StreamSlots:
    """Counts open streams; `take` reserves one for an order or says which bound refuses it."""

    def __init__(self, *, per_order: int, overall: int) -> None:
        self.per_order = per_order
        self.overall = overall
        self._open: Counter[str] = Counter()
        self._total = 0

    def open_for(self, order_id: str) -> int:
        return self._open[order_id]

    def take(self, order_id: str) -> str | None:
        """Reserve a slot for `order_id` (None), or the sentence naming the limit that refuses it."""
        if self._open[order_id] >= self.per_order:
            return f"at most {self.per_order} live streams may be open for one order; close one or retry later"
        if self._total >= self.overall:
            return f"at most {self.overall} live streams may be open on this server; retry later"
        self._open[order_id] += 1
        self._total += 1
        return None

    def give_back(self, order_id: str) -> None:
        self._open[order_id] -= 1
        if self._open[order_id] <= 0:
            del self._open[order_id]
        self._total -= 1

    def refusal(self, detail: str) -> JsonResponse:
        return JsonResponse(
            error_body("too_many_streams", detail), status_code=429, headers={"Retry-After": str(RETRY_AFTER_S)}
        )


class HeldStream(StreamingResponse):
    """A streaming response that calls `release` once it has been served, completed, failed or cancelled."""

    def __init__(self, content: AsyncIterator[str], release: Callable[[], None], **kwargs: object) -> None:
        super().__init__(content, **kwargs)  # type: ignore[arg-type]
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
