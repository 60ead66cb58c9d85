"""The reconciler outlives its broker: before faust starts it waits for the broker (creating the topics) while
answering /healthz 503 on the worker's port; once faust runs, BrokerWatch asks the broker for its metadata every
second and marks it away in the worker's Readiness while it does not answer, so /healthz says so.

faust needs the broker to start (its producer bootstraps in App.start, and an error there ends the worker), so
the wait happens before it, in the same process. Once it runs, faust and aiokafka wait out an outage
themselves (their clients reconnect; the agent and the ticker resume), except where rounds.py stops the worker
on purpose (exit 75: a changelog record the broker never acknowledged).
"""

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from typing import Any

from aiohttp import web
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from servicekit.errors import Dependency, classify
from servicekit.infrastructure import CONNECTING
from servicekit.retrying import Readiness, call_with_retry

log = logging.getLogger(__name__)

START, WATCH = "start", "watch"  # Readiness sources: the wait before faust, the watch while it runs
WATCHED = (Dependency.BROKER,)  # /healthz names the broker only: PostgreSQL serves the timeline's keys, lazily
PROBE_EVERY_S = 1.0
PROBE_TIMEOUT_S = 5.0


async def wait_for_broker(host: str, port: int, readiness: Readiness, connect: Callable[[], Awaitable[None]]) -> bool:
    """`connect()` until it succeeds, retried with backoff while the broker is away, with /healthz answering 503
    on `host`:`port` meanwhile; False when SIGTERM or SIGINT came first (the worker then stops cleanly)."""
    readiness.away(Dependency.BROKER, "not connected yet", START)

    async def healthz(_: web.Request) -> web.Response:
        status, body = readiness.health(ok=False)
        return web.json_response(body, status=status)

    site = web.Application()
    site.router.add_get("/healthz", healthz)
    runner = web.AppRunner(site, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    loop, stopping = asyncio.get_running_loop(), asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    connecting = asyncio.ensure_future(
        call_with_retry(connect, CONNECTING, dependency=Dependency.BROKER, readiness=readiness, source=START)
    )
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait([connecting, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        stopped.cancel()
        if not connecting.done():
            connecting.cancel()
            with suppress(asyncio.CancelledError):
                await connecting
        await runner.cleanup()  # the port is free for faust's web server
    if connecting.cancelled():
        log.info("stopped while waiting for the broker")
        return False
    connecting.result()  # an error retrying cannot help (a refused password) ends the worker here
    return True


class BrokerWatch:
    """Whether the broker answers a metadata request, asked every PROBE_EVERY_S by a client of its own."""

    def __init__(self, bootstrap: str, readiness: Readiness, *, security: Mapping[str, Any] | None = None) -> None:
        self._bootstrap, self._readiness, self._security = bootstrap, readiness, dict(security or {})

    async def run(self, should_stop: Callable[[], bool]) -> None:
        client = AIOKafkaClient(bootstrap_servers=self._bootstrap, **self._security)
        bootstrapped = False
        try:
            while not should_stop():
                try:
                    async with asyncio.timeout(PROBE_TIMEOUT_S):
                        if not bootstrapped:
                            await client.bootstrap()
                            bootstrapped = True
                        await client.fetch_all_metadata()
                except (KafkaError, OSError, TimeoutError) as exc:
                    self._readiness.away(Dependency.BROKER, classify(exc, dependency=Dependency.BROKER).reason, WATCH)
                else:
                    self._readiness.back(Dependency.BROKER, WATCH)
                await asyncio.sleep(PROBE_EVERY_S)
        finally:
            await client.close()
