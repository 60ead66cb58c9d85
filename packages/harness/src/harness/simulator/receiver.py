"""A platform backend's webhook endpoint: verifies each notification's signature and records it."""

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.types import Receive, Scope, Send

from servicekit.http import EmbeddedServer
from servicekit.signatures import SignatureError, verify


@dataclass
class Received:
    """Notifications received, by id, with how often each came and when it first came."""

    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)
    deliveries: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def by_order(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for payload in self.payloads.values():
            out.setdefault(payload["order_id"], []).append(payload)
        return out

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.deliveries.values())


class WebhookReceiver:
    """Runs on 127.0.0.1:`port` inside the caller's event loop."""

    def __init__(self, port: int, secret: str) -> None:
        self.port = port
        self.secret = secret
        self.received = Received()
        self._server: EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/notifications"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The endpoint as a bare ASGI app: it shares the load generator's cores with the stack it measures."""
        if scope["type"] != "http":
            return
        if scope["path"] != "/notifications" or scope["method"] != "POST":
            await _answer(send, 404, b'{"error":"not_found"}')
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        signature = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-signature"), None)
        try:
            verify(signature, body, [self.secret], time.time())
        except SignatureError as exc:
            self.received.rejected += 1
            await _answer(send, 401, orjson.dumps({"error": exc.code, "detail": exc.detail}))
            return
        self._record(orjson.loads(body))
        await _answer(send, 200, b'{"ok":true}')

    def _record(self, payload: dict[str, Any]) -> None:
        nid = str(payload["notification_id"])
        rec = self.received
        rec.deliveries[nid] = rec.deliveries.get(nid, 0) + 1
        if nid not in rec.payloads:
            rec.payloads[nid] = payload
            rec.first_seen[nid] = time.time()
        rec.changed.set()

    async def start(self) -> None:
        config = uvicorn.Config(
            self,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="none",
            proxy_headers=False,
        )
        self._server = EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
