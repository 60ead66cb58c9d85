"""Runs a service's long-lived tasks in one event loop and stops them cleanly on SIGTERM or SIGINT."""

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import uvloop

log = logging.getLogger(__name__)


async def run_until_stopped(tasks: Sequence[Coroutine[Any, Any, None]], on_stop: Callable[[], Awaitable[None]]) -> None:
    """Run `tasks` until a signal arrives or one of them fails; then cancel the rest and call `on_stop`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = [asyncio.create_task(t) for t in tasks]
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*running, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                log.error("a service task failed, stopping", exc_info=task.exception())
    finally:
        for task in [*running, stopper]:
            task.cancel()
        await asyncio.gather(*running, stopper, return_exceptions=True)
        await on_stop()
    failed = [t for t in running if not t.cancelled() and t.exception() is not None]
    if failed:
        raise SystemExit(1)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """The process entry point of a service."""
    uvloop.run(main())
