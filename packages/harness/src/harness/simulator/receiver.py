"""A platform backend's webhook endpoint: verifies each notification's signature and records it.

It answers from a thread of its own with its own event loop, not from the caller's loop: the caller is a load
generator or a test driving hundreds of HTTP requests, and a receiver queued behind them answered after the
notifier's 5 s timeout, which the notifier rightly retried, and the checks then saw a notification delivered
twice that the stack had sent once. What it received is recorded on the caller's loop (the caller reads
`received` without locks), stamped with the time the request arrived.
"""

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.types import Receive, Scope, Send

from servicekit.serving import EmbeddedServer
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

    def of_orders(self, order_ids: Collection[str]) -> tuple[int, int]:
        """How many notifications of these orders came, and how many told the user something again: a
        notification delivered more than once, or an order's status told under a second notification id (two
        pushes for one status). A run's own, when one receiver serves several runs (the bench's rate steps)."""
        mine = [nid for nid, payload in self.payloads.items() if payload["order_id"] in order_ids]
        statuses = Counter((self.payloads[nid]["order_id"], self.payloads[nid]["status"]) for nid in mine)
        again = sum(self.deliveries.get(nid, 1) - 1 for nid in mine) + sum(n - 1 for n in statuses.values())
        return len(mine), again


class WebhookReceiver:
    """Runs on 127.0.0.1:`port` in a thread of its own; `received` changes only on the loop that started it."""

    def __init__(self, port: int, secret: str) -> None:
        self.port = port
        self.secret = secret
        self.received = Received()
        self._server: EmbeddedServer | None = None
        self._thread: threading.Thread | None = None
        self._caller: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/notifications"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The endpoint as a bare ASGI app, lean because it shares the load generator's process and cores with the
        stack it measures (its own thread and loop, the same interpreter)."""
        arrived = time.time()
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
            verify(signature, body, [self.secret], arrived)
        except SignatureError as exc:
            self._on_caller(self._reject)
            await _answer(send, 401, orjson.dumps({"error": exc.code, "detail": exc.detail}))
            return
        self._on_caller(self._record, orjson.loads(body), arrived)
        await _answer(send, 200, b'{"ok":true}')

    def _on_caller(self, record: Any, *args: Any) -> None:
        assert self._caller is not None, "started by start()"
        self._caller.call_soon_threadsafe(record, *args)

    def _reject(self) -> None:
        self.received.rejected += 1

    def _record(self, payload: dict[str, Any], arrived: float) -> None:
        nid = str(payload["notification_id"])
        rec = self.received
        rec.deliveries[nid] = rec.deliveries.get(nid, 0) + 1
        if nid not in rec.payloads:
            rec.payloads[nid] = payload
            rec.first_seen[nid] = arrived
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
        self._caller = asyncio.get_running_loop()
        server = self._server = EmbeddedServer(config)
        failed: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(server.serve())
            except BaseException as exc:  # noqa: BLE001 - handed to start(), which raises it
                failed.append(exc)

        self._thread = threading.Thread(target=run, name=f"webhook-receiver-{self.port}", daemon=True)
        self._thread.start()
        while not server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the webhook receiver on port {self.port} did not start") from next(
                    iter(failed), None
                )
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            await asyncio.to_thread(self._thread.join)
            await asyncio.sleep(0)  # what it received last is recorded before the caller reads it


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
