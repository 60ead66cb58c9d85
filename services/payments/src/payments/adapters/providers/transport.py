"""What the provider adapters share on the wire: sending a request, reading headers, naming problems."""

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx
from pydantic import ValidationError

from servicekit.request_errors import described


class Unanswered(Exception):
    """No answer to trust: the provider did not answer, failed, or its answer failed its signature check."""


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by its lower-case name, in any mapping (httpx and Starlette headers already ignore case)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def problems(exc: ValidationError) -> str:
    """A validation error in one line: where and what, as credited's 422 answers say it."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())[:500]


@dataclass(frozen=True, slots=True)
class Reply:
    """A provider's answer as the adapters read it: status, headers (lower-case names) and body."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class WireFailed(Exception):
    """The request got no answer: a timeout, a refused or lost connection."""


class Wire(Protocol):
    """How the adapters reach their provider over HTTP."""

    async def request(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """The answer, whatever its status; WireFailed when there is none."""
        ...

    async def aclose(self) -> None: ...


RESENT_AFTER_A_RESET = 1
"""How many times AiohttpWire sends a request again on a new connection when the connection it went on was closed
or reset under it. A server closes a kept-alive connection when it has been idle for its own timeout (uvicorn's
is 5 s), and a request that goes out on it just then meets a reset: in the 20,000-order demo three queries in a
run were answered `unknown` that way and waited for the next query, seconds later. Every call the adapters make
may be sent twice: a query reads, a close is idempotent, a refund carries our refund id as the provider's
idempotency key. A timeout is not sent again (the provider may still be answering it)."""


MAX_CONNECTIONS = 64
"""The connections one provider's AiohttpWire keeps at most: requests beyond them wait for one, inside their
timeout."""

KEPT_FROM_QUERIES = 8
"""Connections of each provider's wire that payments' query worker never fills: it keeps at most
QUERIES_IN_FLIGHT queries in flight. A refund (and the query of its outcome) gets a connection even while
every query is waiting on a slow provider; when the worker could fill all MAX_CONNECTIONS, a refund queued behind
them inside its own timeout and could time out without having been sent."""

QUERIES_IN_FLIGHT = MAX_CONNECTIONS - KEPT_FROM_QUERIES


class AiohttpWire:
    """The providers' HTTP in a running payments: aiohttp, not httpx. In the 20,000-order demo's profile httpx
    was 45% of the query worker's samples (httpcore's pool checks every idle connection at every request).
    Measured against the local provider in its own process, a signed query (sign, send, verify the signed
    answer, parse) cost payments 1.9-2.2 ms of CPU through httpx and 0.43-0.48 ms through aiohttp with 50 in
    flight, and 1.1-1.2 against 0.57-0.65 ms one at a time. The notifier's poster is aiohttp for the same
    reason."""

    def __init__(self, *, timeout_s: float, max_connections: int = MAX_CONNECTIONS) -> None:
        self._timeout_s = timeout_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:  # built on first use, inside the running loop
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        return self._session

    async def request(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        # One deadline for the call, the resend after a reset included: each attempt with a timeout of its own let a
        # call take twice its timeout, past the query round's lease (3 calls' timeouts) in the worst case.
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._attempts(method, url, body, headers)
        except TimeoutError:
            raise WireFailed("timed out") from None

    async def _attempts(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        for attempt in range(1, RESENT_AFTER_A_RESET + 2):
            try:
                async with self._open().request(method, url, data=body or None, headers=dict(headers)) as response:
                    content = await response.read()
                    return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, content)
            except TimeoutError:
                raise WireFailed("timed out") from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if attempt > RESENT_AFTER_A_RESET:
                    raise WireFailed(described(exc, url)) from None
            except (aiohttp.ClientError, OSError) as exc:
                raise WireFailed(described(exc, url)) from None
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            await asyncio.sleep(0)  # lets the connector close its transports


class HttpxWire:
    """The providers' HTTP through an httpx client: what the SDK cross-checks use (an httpx.MockTransport
    captures the request we send)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def request(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        try:
            response = await self._client.request(method, url, content=body or None, headers=dict(headers))
        except httpx.HTTPError as exc:
            raise WireFailed(repr(exc)) from None
        return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content)

    async def aclose(self) -> None:
        await self._client.aclose()


async def send(wire: Wire, method: str, url: str, body: bytes, headers: Mapping[str, str], who: str) -> Reply:
    """The provider's answer below 500; Unanswered for a timeout, a lost connection or a server error,
    after which the request's effect is unknown."""
    try:
        response = await wire.request(method, url, body, headers)
    except WireFailed as exc:
        raise Unanswered(f"no answer from {who}: {exc}"[:200]) from None
    if response.status_code >= 500:
        raise Unanswered(f"{who} answered {response.status_code}: {response.text[:120]}")
    return response
