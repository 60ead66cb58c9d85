"""Sends the local provider's signed notifications to the merchant's notify URL, with the knobs a test
of lost and repeated callbacks needs: drop a share, repeat a share, delay each by up to some seconds,
and send again after an answer the protocol does not take as success."""

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

log = logging.getLogger(__name__)

SENDS_IN_FLIGHT = 64
"""Notifications posted at once (each waits its turn after its delay). Without this bound a backlog queued
inside httpx's connection pool, whose bookkeeping in httpcore 1.0 walks every waiting request each time a
connection is handed back: with a few thousand callbacks waiting (the demo at 1,500 orders/s, the stack behind),
the local provider spent a whole core in it and placed 30 orders a second."""

CONNECTIONS_PER_CLIENT = 8
"""The connections of each client the notifier posts with (`clients`). httpcore 1.0's pool also walks all its
connections at every request, counting the idle ones once per connection and polling each idle socket: with one
client of 64 connections that bookkeeping was a third of the local provider's CPU at 100 orders/s."""


def clients(timeout_s: float = 10.0) -> list[httpx.AsyncClient]:
    """The clients a Notifier posts with, in turn: together a connection for every post in flight, all kept
    alive, in pools small enough that their bookkeeping stays small."""
    limits = httpx.Limits(max_connections=CONNECTIONS_PER_CLIENT, max_keepalive_connections=CONNECTIONS_PER_CLIENT)
    count = SENDS_IN_FLIGHT // CONNECTIONS_PER_CLIENT
    return [httpx.AsyncClient(timeout=timeout_s, limits=limits) for _ in range(count)]


@dataclass(frozen=True)
class Notification:
    """One signed notification, ready to send: the same bytes go out on every attempt, as providers do
    (WeChat Pay and Alipay re-sign a retry; the local provider re-sends the original)."""

    provider: str
    trade_no: str
    body: bytes
    headers: Mapping[str, str]
    accepted: Callable[[httpx.Response], bool]


@dataclass
class Delivery:
    """How one notification went: every answer's status, and whether the merchant took it."""

    notification: Notification
    dropped: bool = False
    delays: list[float] = field(default_factory=list)  # drawn for each copy
    sent_at: list[float] = field(default_factory=list)  # monotonic time of each attempt
    statuses: list[int] = field(default_factory=list)
    accepted: bool = False


@dataclass
class NotifyKnobs:
    drop_share: float = 0.0
    duplicate_share: float = 0.0
    max_delay_s: float = 0.0
    retry_delays_s: tuple[float, ...] = ()
    seed: int | None = None


class Notifier:
    """Delivers in background tasks, at most SENDS_IN_FLIGHT posts at once, on `clients` in turn; `drain()`
    waits for every delivery started so far."""

    def __init__(self, knobs: NotifyKnobs, clients: Sequence[httpx.AsyncClient]) -> None:
        self.knobs = knobs
        self.clients = list(clients)
        """Each post goes out on the next of these."""
        self._turn = 0
        self._sending = asyncio.Semaphore(SENDS_IN_FLIGHT)
        self._in_flight = 0
        self.most_in_flight = 0
        """The most posts that were ever in flight at once."""
        self.urls: dict[str, str] = {}
        self.deliveries: list[Delivery] = []
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(knobs.seed)  # noqa: S311 - simulation, not crypto
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, notification: Notification) -> Delivery:
        """Start delivering `notification` (or drop it, as the knobs say)."""
        delivery = Delivery(notification)
        self.deliveries.append(delivery)
        if self._rng.random() < self.knobs.drop_share:
            delivery.dropped = True
            self.counts["dropped"] += 1
            return delivery
        copies = 2 if self._rng.random() < self.knobs.duplicate_share else 1
        self.counts["duplicated"] += copies - 1
        for _ in range(copies):
            delay = self._rng.uniform(0, self.knobs.max_delay_s)
            delivery.delays.append(delay)
            task = asyncio.create_task(self._deliver(delivery, delay))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return delivery

    async def _deliver(self, delivery: Delivery, delay: float) -> None:
        notification = delivery.notification
        url = self.urls.get(notification.provider)
        if url is None:
            log.warning("no notify URL for %s: trade %s not notified", notification.provider, notification.trade_no)
            return
        for wait in (delay, *self.knobs.retry_delays_s):
            await asyncio.sleep(wait)
            delivery.sent_at.append(time.monotonic())
            try:
                response = await self._post(url, notification)
            except httpx.HTTPError as exc:
                log.info("notification of %s to %s failed: %r", notification.trade_no, url, exc)
                delivery.statuses.append(0)
                self.counts["unanswered"] += 1
                continue
            delivery.statuses.append(response.status_code)
            self.counts["sent"] += 1
            if notification.accepted(response):
                delivery.accepted = True
                return

    async def _post(self, url: str, notification: Notification) -> httpx.Response:
        async with self._sending:
            client = self.clients[self._turn % len(self.clients)]
            self._turn += 1
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
            try:
                return await client.post(url, content=notification.body, headers=dict(notification.headers))
            finally:
                self._in_flight -= 1

    async def drain(self) -> None:
        """Wait until every delivery started so far has finished (delivered, refused or out of retries)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
