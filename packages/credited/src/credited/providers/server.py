"""LocalProvider: one Starlette app on loopback speaking WeChat Pay API v3 and Alipay, with a small
development API (`/dev/...`) to open and pay trades from another process and read what happened."""

import asyncio
import logging
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from credited.providers import alipay, wechatpay
from credited.providers.book import Book, BookError, Trade, TradeState
from credited.providers.faults import Faults
from credited.providers.keys import LocalKeys
from credited.providers.notifier import AiohttpPost, Delivery, Notification, Notifier, NotifyKnobs
from servicekit.serving import EmbeddedServer

log = logging.getLogger(__name__)

PROVIDERS = (wechatpay.PROVIDER, alipay.PROVIDER)


class LocalProvider:
    """Runs on 127.0.0.1:`port` inside the caller's event loop. Keys are made fresh at construction;
    `keys.payments_env(url)` configures payments as its merchant."""

    def __init__(
        self,
        port: int,
        *,
        knobs: NotifyKnobs | None = None,
        faults: Faults | None = None,
        keys: LocalKeys | None = None,
        notify_urls: dict[str, str] | None = None,
    ) -> None:
        self.port = port
        self.keys = keys or LocalKeys.generate()
        self.book = Book()
        self.faults = faults or Faults()
        self.wechatpay = wechatpay.WeChatPayServer(self.keys, self.book, self.faults)
        self.alipay = alipay.AlipayServer(self.keys, self.book, self.faults)
        self._post = AiohttpPost()
        self.notifier = Notifier(knobs or NotifyKnobs(), self._post)
        self.notifier.urls.update(notify_urls or {})
        self._server: EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self, provider: str, trade_no: str, amount: int, currency: str = "CNY") -> Trade:
        """A user starts paying a merchant trade: it exists at the provider, waiting for payment."""
        if provider not in PROVIDERS:
            raise ValueError(f"the local provider speaks {PROVIDERS}, not {provider!r}")
        return self.book.open(provider, trade_no, amount, currency)

    def pay(self, provider: str, trade_no: str, amount: int, currency: str = "CNY") -> Delivery:
        """The user pays: the trade is paid and its notification goes out (or not, as the knobs say)."""
        trade = self.book.pay(provider, self.open(provider, trade_no, amount, currency).trade_no)
        return self.notifier.send(self.notification(trade))

    def notification(self, trade: Trade) -> Notification:
        """The signed notification of `trade`'s current state, in its provider's protocol."""
        server = self.wechatpay if trade.provider == wechatpay.PROVIDER else self.alipay
        return server.notification(trade)

    def stats(self) -> dict[str, Any]:
        """Counts a test or a demo scores against: notifications and injected faults."""
        deliveries = self.notifier.deliveries
        return {
            "trades": len(self.book.trades),
            "closed": self.book.closes,
            "closed_unpaid": sorted(
                f"{t.provider}:{t.trade_no}"
                for t in self.book.trades.values()
                if t.state is TradeState.CLOSED and t.paid_at is None
            ),
            "notifications": len(deliveries),
            "accepted": sum(d.accepted for d in deliveries),
            "dropped": sorted(f"{d.notification.provider}:{d.notification.trade_no}" for d in deliveries if d.dropped),
            "sends": dict(self.notifier.counts),
            "faults": dict(self.faults.counts),
        }

    async def _dev_trade(self, request: Request) -> JSONResponse:
        body = await request.json()
        try:
            provider, trade_no, amount = str(body["provider"]), str(body["trade_no"]), int(body["amount"])
            if body.get("pay", True):
                delivery = self.pay(provider, trade_no, amount, str(body.get("currency", "CNY")))
                trade = self.book.get(provider, trade_no)
                paid_at = trade.paid_at if trade is not None else None
                assert paid_at is not None
                # paid_at as both protocols state it, in whole seconds: the time payments and the reconciler see.
                stated = paid_at.replace(microsecond=0).isoformat()
                return JSONResponse({"paid": True, "dropped": delivery.dropped, "paid_at": stated})
            self.open(provider, trade_no, amount, str(body.get("currency", "CNY")))
        except (KeyError, ValueError, TypeError, BookError) as exc:
            return JSONResponse({"error": "invalid_trade", "detail": str(exc)}, status_code=422)
        return JSONResponse({"paid": False, "dropped": False})

    async def _dev_keys(self, request: Request) -> JSONResponse:
        return JSONResponse(self.keys.public_parts())

    async def _dev_stats(self, request: Request) -> JSONResponse:
        return JSONResponse(self.stats())

    def app(self) -> Starlette:
        dev = [
            Route("/dev/trades", self._dev_trade, methods=["POST"]),
            Route("/dev/keys", self._dev_keys, methods=["GET"]),
            Route("/dev/stats", self._dev_stats, methods=["GET"]),
        ]
        return Starlette(routes=[*self.wechatpay.routes(), *self.alipay.routes(), *dev])

    async def start(self) -> None:
        config = uvicorn.Config(
            self.app(),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="none",
            timeout_graceful_shutdown=1,
        )
        self._server = EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                await self._task  # raises why it could not start
                raise RuntimeError(f"the local provider could not listen on port {self.port}")
            await asyncio.sleep(0.02)
        log.info("local payment provider (WeChat Pay, Alipay) on %s", self.url)

    async def stop(self) -> None:
        """Stop serving, after the notifications under way have gone out."""
        await self.notifier.drain()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        await self._post.close()
