"""The benchmark's load generator: the simulator's users and payment provider, sending over aiohttp.

The load generator shares the two cores with the stack it measures, and httpx's pure-Python pool and
HTTP/1.1 parser cost several times the CPU per request of aiohttp's C parser; the requests, their
Idempotency-Keys, signatures, retries and the ground truth are the simulator's own.
"""

import asyncio
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import httpx
import orjson

from harness.simulator.run import Simulator, percentile

RETRIED = (aiohttp.ClientConnectionError, aiohttp.ServerDisconnectedError, asyncio.TimeoutError)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


@dataclass
class ClientTimes:
    """Each request's time as the load generator saw it, from before the connection pool to the response
    headers: against the service's own answer time it shows how long requests waited in the generator."""

    seconds: list[float] = field(default_factory=list)

    def trace(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()
        config.on_request_start.append(self._start)
        config.on_request_end.append(self._end)
        return config

    async def _start(self, _: aiohttp.ClientSession, context: SimpleNamespace, __: Any) -> None:
        context.bench_started = time.monotonic()

    async def _end(self, _: aiohttp.ClientSession, context: SimpleNamespace, __: Any) -> None:
        self.seconds.append(time.monotonic() - context.bench_started)

    def take(self) -> dict[str, float | None]:
        taken, self.seconds = self.seconds, []
        return {"p50_ms": _ms(percentile(taken, 50)), "p99_ms": _ms(percentile(taken, 99))}


def session(concurrency: int, times: ClientTimes, headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
    """The load generator's connections; `headers` (the API key) go with every request."""
    return aiohttp.ClientSession(
        headers=headers,
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=30),
        json_serialize=lambda value: orjson.dumps(value).decode(),
        trace_configs=[times.trace()],
    )


class AiohttpSimulator(Simulator):
    """The simulator, each POST sent through an aiohttp session; answers come back as httpx.Response so the
    simulator reads them as before, and a lost connection is retried as the simulator does."""

    def __init__(self, payments_url: str, psp_secret: str, client: httpx.AsyncClient, http: aiohttp.ClientSession):
        super().__init__(payments_url, psp_secret, client)
        self.http = http

    async def _post(self, url: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(1, 4):
            try:
                async with self.http.post(
                    url, json=kwargs.get("json"), data=kwargs.get("content"), headers=kwargs.get("headers")
                ) as response:
                    return httpx.Response(response.status, content=await response.read())
            except RETRIED as exc:
                if attempt == 3:
                    raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(0.05 * attempt)
        raise AssertionError("unreachable")
