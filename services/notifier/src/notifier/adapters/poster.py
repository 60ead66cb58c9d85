"""AiohttpPoster: the notifier's HTTP POSTs to receivers (Web Push services, FCM, the platform webhook), and
what their answers mean for a delivery.

Every request goes through servicekit.netguard: a receiver URL naming a loopback, private, link-local or
metadata address (or plain http outside development mode) is refused before connecting, at connect time on
the address the socket would reach, and on each redirect. A refusal is final: no retry can change it.

aiohttp, not httpx: with hundreds of deliveries in flight, httpx's connection pool spends its time matching
queued requests to connections (about 100 POSTs/s on one core, against about 3,000 with aiohttp).

The timeout is the receiver's: a request waits for one of the `max_connections` before its clock starts. Counted
from the queue (aiohttp's total timeout includes waiting for a pooled connection), a backlog left too little time for
a receiver that had taken the POST to answer, and the retry of that "timeout" reached it a second time. The wait for
a connection is bounded too, by the same timeout: a delivery's lease (NotifierSettings.lease_s, twice the longest
timeout and a margin) must outlast the wait and the request, or another instance claims the delivery while it is
still on its way and sends it again. A request that found no connection in time was not sent: it is retried.
"""

import asyncio
import email.utils
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from notifier.ports import DeliveryFailed
from servicekit.netguard import AddressPolicy, guarded_session, refused_by_guard
from servicekit.request_errors import described

GONE = frozenset({404, 410})
"""A push service that answers 404 or 410 no longer knows the subscription: it is removed (RFC 8030 §7.3)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A receiver's answer: status, headers (lower-case names) and the start of the body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Poster(Protocol):
    async def post(self, what: str, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST and return the answer; a timeout or a connection failure raises a retryable DeliveryFailed."""
        ...


class AiohttpPoster:
    def __init__(self, *, timeout_s: float, policy: AddressPolicy, max_connections: int = 200) -> None:
        self._timeout_s = timeout_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._policy = policy
        self._max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)  # never more requests than pooled connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def max_connections(self) -> int:
        """The connections it keeps: as many deliveries as its channels may have in flight (InFlightLimit)."""
        return self._max_connections

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:  # built on first use, inside the running loop
            self._session = guarded_session(
                self._policy,
                timeout=self._timeout,
                connector_options={"limit": self._max_connections, "ttl_dns_cache": 300, "keepalive_timeout": 30},
            )
        return self._session

    async def post(self, what: str, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise DeliveryFailed(
                f"{what} found no free connection in {self._timeout_s:g}s: not sent", retry=True
            ) from None
        try:
            async with self._open().post(url, data=body, headers=dict(headers)) as response:
                content = await response.content.read(2048)
                return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, content)
        except TimeoutError:
            raise DeliveryFailed(f"{what} timed out", retry=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            refused = refused_by_guard(exc)
            if refused is not None:
                raise DeliveryFailed(f"{what} refused: {refused}", retry=False) from None
            raise DeliveryFailed(f"{what} unreachable: {described(exc, url)}"[:300], retry=True) from None
        finally:
            self._slots.release()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            await asyncio.sleep(0)  # lets the connector close its transports


def retry_after_s(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def failure_for(answer: Answer, what: str, *, gone_on: frozenset[int] = frozenset()) -> DeliveryFailed:
    """The failure an unsuccessful answer means: 5xx, 408 and 429 pass (retry, honouring Retry-After);
    `gone_on` statuses mean the device is gone; any other 4xx is a mistake no retry can fix."""
    detail = answer.body[:200].decode(errors="replace").strip()
    reason = f"{what} answered {answer.status}" + (f": {detail}" if detail else "")
    if answer.status in gone_on:
        return DeliveryFailed(reason, retry=False, gone=True)
    retryable = answer.status >= 500 or answer.status in (408, 429)
    return DeliveryFailed(reason, retry=retryable, retry_after_s=retry_after_s(answer.headers.get("retry-after")))
