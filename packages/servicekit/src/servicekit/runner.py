"""Runs a service's long-lived tasks in one event loop and stops them cleanly on SIGTERM or SIGINT; runs
several copies of a service behind one HTTP port when one process is not enough.

With `processes` above 1 the process started (by compose, `credited up`, ...) only supervises: it starts that
many copies of the same command line, each a whole instance of the service (HTTP on the shared port with
SO_REUSEPORT, its own outbox relay, consumers in the same groups), passes SIGTERM and SIGINT on to them,
and when one copy ends it stops the others and exits with that copy's code, so whatever restarts the service
restarts them all. The copies share one directory of Prometheus metric files, so /metrics, served once on its
own port by the first copy (servicekit.metrics_server), answers for all (prometheus_client's multiprocess mode).
"""

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import uvloop

log = logging.getLogger(__name__)

PROCESS_INDEX = "CREDITED_PROCESS_INDEX"
"""Set in each copy a supervisor starts: which copy it is (0, 1, ...)."""
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def process_index() -> int | None:
    """Which copy of the service this process is, or None when it runs alone."""
    value = os.environ.get(PROCESS_INDEX)
    return None if value is None else int(value)


GC_FREEZE = "CREDITED_GC_FREEZE"
"""Set to 0 to leave start-up's objects to the garbage collector (see freeze_startup); for side-by-side runs."""


def freeze_startup() -> int:
    """Move every object alive now (the imported modules, the app, the clients) out of the garbage collector's
    view, so that its full collections walk only what the service makes while it works. A process of ours holds
    about 100,000 objects after start-up, and walking them took 16-24 ms per full collection, with the event
    loop stopped (longer on busy cores): the tail of every latency the service is part of. What is frozen
    stays alive for good, as start-up's objects do anyway. Returns how many objects were frozen (0 when
    CREDITED_GC_FREEZE=0)."""
    if os.environ.get(GC_FREEZE, "1") == "0":
        return 0
    gc.collect()  # what start-up already let go of is freed now, not kept forever
    gc.freeze()
    return gc.get_freeze_count()


CLOSE_S = 5.0
"""How long closing the clients (consumers leave their groups, the producer flushes, the pool closes) may take
after the work stopped."""


async def run_until_stopped(
    tasks: Sequence[Coroutine[Any, Any, None]],
    on_stop: Callable[[], Awaitable[None]],
    *,
    stopping: asyncio.Event | None = None,
    grace_s: float = 10.0,
) -> None:
    """Run `tasks` until a signal arrives or one of them fails; then stop the rest and call `on_stop`.

    With `stopping`, a signal stops the service gracefully: the event is set, and the tasks that watch it stop
    taking work, finish what they have and return; whatever still runs after `grace_s` is cancelled, with a
    log line naming it. Without it, or when a task failed, the rest are cancelled at once. `on_stop` gets
    CLOSE_S more."""
    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled.set)
    running = [asyncio.create_task(t, name=getattr(t, "__qualname__", repr(t))) for t in tasks]
    stopper = asyncio.create_task(signalled.wait())
    try:
        done, _ = await asyncio.wait([*running, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                log.error("a service task failed, stopping", exc_info=task.exception())
        if stopper in done and stopping is not None:
            await _drain(running, stopping, grace_s)
    finally:
        for task in [*running, stopper]:
            task.cancel()
        await asyncio.gather(*running, stopper, return_exceptions=True)
        await _close(on_stop)
    failed = [t for t in running if not t.cancelled() and t.exception() is not None]
    if failed:
        raise SystemExit(1)


async def _drain(running: list["asyncio.Task[None]"], stopping: asyncio.Event, grace_s: float) -> None:
    """Ask the tasks to finish (`stopping`) and wait for them, at most `grace_s`; name what is cut."""
    log.info("stopping: no new work; finishing the work in hand (at most %.0f s)", grace_s)
    started = time.monotonic()
    stopping.set()
    _, cut = await asyncio.wait(running, timeout=grace_s)
    if cut:
        names = ", ".join(sorted(task.get_name() for task in cut))
        log.warning("stopping: %.0f s passed, cutting short what is still running: %s", grace_s, names)
    else:
        log.info("stopping: the work in hand finished in %.1f s", time.monotonic() - started)


async def _close(on_stop: Callable[[], Awaitable[None]]) -> None:
    try:
        await asyncio.wait_for(on_stop(), timeout=CLOSE_S)
    except TimeoutError:
        log.warning("stopping: closing the clients took over %.0f s; exiting without them", CLOSE_S)


STOP_MARGIN_S = 5.0
"""What a supervisor of copies waits after a copy's stop grace and its CLOSE_S before it kills the copy."""


def run(
    main: Callable[[], Coroutine[Any, Any, None]],
    *,
    processes: int = 1,
    address: tuple[str, int] | None = None,
    stop_grace_s: float = 10.0,
) -> None:
    """The process entry point of a service: `processes` copies of it (see the module's docstring), which
    share the HTTP `address` and each stop within `stop_grace_s` (the service's CREDITED_STOP_GRACE_S) and
    CLOSE_S, which their supervisor waits before it kills them."""
    if processes > 1 and process_index() is None:
        if address is not None:
            _refuse_a_taken_port(*address)
        raise SystemExit(supervise(processes, stop_timeout_s=stop_grace_s + CLOSE_S + STOP_MARGIN_S))
    uvloop.run(main())


def _refuse_a_taken_port(host: str, port: int) -> None:
    """SO_REUSEPORT would let the copies join any other process of this user already on the port (another
    stack's): the port must be free before they start."""
    if port == 0:
        raise SystemExit("copies of a service share one HTTP port: set a port, not 0")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Connections of a copy that was just killed linger in TIME_WAIT; they must not keep its restart out.
        # Another process listening on the port still refuses the bind.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"{host}:{port} is in use ({exc.strerror}): not starting copies there") from None


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def supervise(processes: int, stop_timeout_s: float = 20.0) -> int:
    """Start `processes` copies of this command line and wait; the exit code of the first copy to end. Copies
    still running `stop_timeout_s` after they were told to stop are killed: it must exceed the time a copy may
    take to stop (its stop grace and CLOSE_S), or a copy is killed while it finishes the requests in hand."""
    metrics_dir = tempfile.mkdtemp(prefix="credited-metrics-")
    argv = [sys.executable, *sys.orig_argv[1:]]
    children = [
        subprocess.Popen(  # noqa: S603 - this process's own command line
            argv, env={**os.environ, PROCESS_INDEX: str(i), METRICS_DIR: metrics_dir}, preexec_fn=_die_with_parent
        )
        for i in range(processes)
    ]
    stopping_since: float | None = None

    def stop(sig: int, _: object = None) -> None:
        nonlocal stopping_since
        stopping_since = stopping_since or time.monotonic()
        for child in children:
            if child.poll() is None:
                child.send_signal(sig)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    first: int | None = None
    try:
        while any(child.poll() is None for child in children):
            ended = [child.returncode for child in children if child.returncode is not None]
            if ended and first is None:
                first = ended[0]
                if stopping_since is None:
                    log.error("a copy of the service exited with %s; stopping the others", first)
                    stop(signal.SIGTERM)
            if stopping_since is not None and time.monotonic() - stopping_since > stop_timeout_s:
                stop(signal.SIGKILL)
            time.sleep(0.1)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    code = first if first is not None else max((child.returncode for child in children), key=abs)
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention
