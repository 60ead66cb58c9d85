"""Sends the local provider's signed notifications to the merchant's notify URL, with the knobs a test
of lost and repeated callbacks needs: drop a share, repeat a share, delay each by up to some seconds,
and send again after an answer the protocol does not take as success."""

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
import httpx

log = logging.getLogger(__name__)

SENDS_IN_FLIGHT = 256
"""Notifications posted at once (each waits its turn after its delay): a backlog waits here, in the semaphore, not
inside the HTTP client's connection pool. A provider posts from a fleet, so this must not be what paces them: at
64, with payments answering a callback in about half a second at the 20,000-order demo's peak, the local provider
could post about 130 a second against about 280 payments a second, and its notifications reached payments up to
14 s after the payments they announced (3,096 orders overdue with nothing dropped); at 256, none."""


@dataclass(frozen=True)
class Answer:
    """The merchant's answer to one notification: what a provider looks at to decide it was received."""

    status: int
    text: str


class Unanswered(Exception):
    """No answer: the connection failed or timed out."""


Post = Callable[[str, bytes, Mapping[str, str]], Awaitable[Answer]]
"""Post a notification's body with its headers to a notify URL; its Answer, or Unanswered."""


class AiohttpPost:
    """Posts over aiohttp, SENDS_IN_FLIGHT connections kept alive. Through httpx the posting was half of the local
    provider's CPU in the 20,000-order demo, on the cores the stack runs on, and it fell behind the payments it was
    to announce (httpcore 1.0's pool walks its connections and polls each idle socket at every request; for the
    demo's scoring reads that was 1.5-1.8 ms of CPU a request, against 0.16 through aiohttp). The session is
    made on first use, in the loop that serves."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=SENDS_IN_FLIGHT)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        try:
            async with self._session.post(url, data=body, headers=dict(headers)) as response:
                return Answer(response.status, await response.text())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unanswered(repr(exc)) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def httpx_post(client: httpx.AsyncClient) -> Post:
    """Posts through an httpx client: a test's merchant served in process (an ASGI transport)."""

    async def post(url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        try:
            response = await client.post(url, content=body, headers=dict(headers))
        except httpx.HTTPError as exc:
            raise Unanswered(repr(exc)) from None
        return Answer(response.status_code, response.text)

    return post


@dataclass(frozen=True)
class Notification:
    """One signed notification, ready to send: the same bytes go out on every attempt, as providers do
    (WeChat Pay and Alipay re-sign a retry; the local provider re-sends the original)."""

    provider: str
    trade_no: str
    body: bytes
    headers: Mapping[str, str]
    accepted: Callable[[Answer], bool]


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
    """Delivers in background tasks, at most SENDS_IN_FLIGHT posts at once, through `post`; `drain()` waits for
    every delivery started so far."""

    def __init__(self, knobs: NotifyKnobs, post: Post) -> None:
        self.knobs = knobs
        self.post = post
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
                answer = await self._post(url, notification)
            except Unanswered as exc:
                log.info("notification of %s to %s failed: %s", notification.trade_no, url, exc)
                delivery.statuses.append(0)
                self.counts["unanswered"] += 1
                continue
            delivery.statuses.append(answer.status)
            self.counts["sent"] += 1
            if notification.accepted(answer):
                delivery.accepted = True
                return

    async def _post(self, url: str, notification: Notification) -> Answer:
        async with self._sending:
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
            try:
                return await self.post(url, notification.body, notification.headers)
            finally:
                self._in_flight -= 1

    async def drain(self) -> None:
        """Wait until every delivery started so far has finished (delivered, refused or out of retries)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
