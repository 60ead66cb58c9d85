"""BodySizeLimit: request bodies above a size (CREDITED_MAX_BODY_BYTES, 64 KiB by default) are answered 413
in credited's error shape before they are read whole.

A declared Content-Length above the limit is refused before the app runs; a body without one (chunked) is
counted as it streams in, and the request is refused as soon as the count passes the limit, whatever the app
then does with the interruption. Nothing past the limit is ever buffered.
"""

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit.errors import error_body

DEFAULT_MAX_BODY_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    """Raised into the app when a streamed body passes the limit: the app stops reading."""


class BodySizeLimit:
    """ASGI middleware: 413 `payload_too_large` for bodies over `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def refusal(self) -> JSONResponse:
        detail = f"request bodies are limited to {self.max_bytes} bytes"
        # No `Connection: close`: closing with the client still sending resets the connection before it reads
        # the answer. uvicorn discards the rest of a body whose response is complete, without buffering it.
        return JSONResponse(error_body("payload_too_large", detail), status_code=413)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.refusal()(scope, receive, send)
            return
        await _Counted(self, scope, receive, send).run()


class _Counted:
    """One request whose body is counted as the app reads it."""

    def __init__(self, limit: BodySizeLimit, scope: Scope, receive: Receive, send: Send) -> None:
        self._limit = limit
        self._scope = scope
        self._receive = receive
        self._send = send
        self._seen = 0
        self._too_large = False
        self._app_started = False
        self._refused = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._seen += len(message.get("body", b""))
            if self._seen > self._limit.max_bytes:
                self._too_large = True
                raise BodyTooLarge(f"more than {self._limit.max_bytes} bytes")
        return message

    async def send(self, message: Message) -> None:
        if self._too_large and not self._app_started:
            await self._refuse()  # whatever the app answers to the interruption, the client gets the 413
            return
        if self._refused:
            return
        if message["type"] == "http.response.start":
            self._app_started = True
        await self._send(message)

    async def _refuse(self) -> None:
        if not self._refused:
            self._refused = True
            await self._limit.refusal()(self._scope, self._receive, self._send)

    async def run(self) -> None:
        try:
            await self._limit.app(self._scope, self.receive, self.send)
        except Exception:
            if not self._too_large:
                raise
        if self._too_large and not self._app_started:
            await self._refuse()
