"""uvicorn inside a service's own event loop: its HTTP port (shared by the copies of a service with
SO_REUSEPORT) and a graceful stop. Apart from servicekit.http so what serves only plain ASGI (the reconciler's
/metrics, the local provider, the test receiver) does not load FastAPI."""

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from servicekit.request_id import RequestId
from servicekit.runner import process_index

log = logging.getLogger(__name__)


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside a process that owns its signals: SIGTERM stops the whole service, not just HTTP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _shared_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


async def serve(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    stopping: asyncio.Event | None = None,
    grace_s: float = 10.0,
    shared: bool | None = None,
) -> None:
    """Run uvicorn in the current loop until cancelled, or until `stopping` is set: then it stops accepting
    connections, closes the idle ones, lets the requests in flight finish (at most `grace_s`, then cancels
    them) and returns. `shared`: the port is shared with the other copies of the service (SO_REUSEPORT); by
    default, when this process is one of several copies (servicekit.runner)."""
    # Idle keep-alive connections stay open longer than clients keep theirs (uvicorn's 5 s default
    # closes them under a client about to reuse one, which the client sees as a reset request).
    config = uvicorn.Config(
        RequestId(app),  # outermost: every request, payments' fast path too, has an id in its logs and answer
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop="none",
        timeout_keep_alive=75,
        # uvicorn cancels the requests still running (and logs how many) a second before the runner's bound
        timeout_graceful_shutdown=max(1, int(grace_s) - 1),
        proxy_headers=False,  # nothing reads the client address; one middleware less per request
        server_header=False,  # no "server: uvicorn" on every answer: one header less to check and write, no banner
    )
    server = EmbeddedServer(config)
    # A copy of a service run with others (servicekit.runner) shares the port: the kernel spreads connections.
    if shared is None:
        shared = process_index() is not None
    sockets = [_shared_socket(host, port)] if shared else None
    watching = None if stopping is None else asyncio.create_task(_exit_when(stopping, server))
    try:
        await server.serve(sockets=sockets)
    except asyncio.CancelledError:
        if server.server_state.connections:
            log.warning("HTTP stopped with %d connections still open", len(server.server_state.connections))
        server.should_exit = True
        raise
    finally:
        if watching is not None:
            watching.cancel()


async def _exit_when(stopping: asyncio.Event, server: uvicorn.Server) -> None:
    await stopping.wait()
    open_now = len(server.server_state.connections)
    log.info("HTTP: no new connections; finishing the requests in flight on %d open connections", open_now)
    server.should_exit = True
