"""uvicorn inside a service's own event loop: its HTTP port (shared by the copies of a service with
SO_REUSEPORT), every waiting connection accepted at once, and a graceful stop. Apart from servicekit.http so what
serves only plain ASGI (the reconciler's /metrics, the local provider, the test receiver) does not load FastAPI."""

import asyncio
import contextlib
import errno
import functools
import logging
import socket
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

from servicekit.request_id import RequestId
from servicekit.runner import process_index

log = logging.getLogger(__name__)

OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
RESUME_ACCEPTING_S = 1.0
"""How long accepting pauses when the process is out of file descriptors or memory (asyncio waits as long)."""


class Acceptor:
    """Accepts every connection waiting on a listening socket each time the loop finds it ready, and hands each
    to uvicorn's protocol, as asyncio's own servers do. uvloop's servers accept one connection per loop iteration
    (a libuv change of 2022, libuv/libuv#3696), and a service busy enough to take tens of milliseconds an iteration
    then accepts a few dozen connections a second: when the 20,000-order demo opened its 512 connections and
    the local provider its 256 at once, payments had accepted 376 of them after a second and the last after
    eight, and the requests on them waited that long in the kernel's queue. Stands in for uvicorn's
    asyncio.Server: `close` stops accepting, the connections already open stay with uvicorn."""

    def __init__(self, sock: socket.socket, protocol_factory: Callable[[], asyncio.Protocol], backlog: int) -> None:
        self._sock = sock
        self._factory = protocol_factory
        self._backlog = backlog
        self._loop = asyncio.get_running_loop()
        self._connecting: set[asyncio.Task[None]] = set()
        sock.setblocking(False)
        sock.listen(backlog)
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(self._backlog):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # none left waiting
            except OSError as exc:
                if exc.errno not in OUT_OF_RESOURCES:
                    raise
                log.warning("HTTP: cannot accept connections (%s); trying again in %.0f s", exc, RESUME_ACCEPTING_S)
                self._loop.remove_reader(self._sock.fileno())
                self._loop.call_later(RESUME_ACCEPTING_S, self._resume)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._connect(conn))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError:  # the client left before its connection was set up: nothing to answer
            conn.close()

    def _resume(self) -> None:
        if self._sock.fileno() != -1:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def close(self) -> None:
        """Accept no more connections (uvicorn's shutdown): the listening socket closes."""
        if self._sock.fileno() != -1:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

    async def wait_closed(self) -> None:
        if self._connecting:
            await asyncio.wait(self._connecting)


HEADERS_WITHIN_S = 10.0
"""How long a request's line and headers may take from their first byte (or from the connection's opening): uvicorn
times out only an idle keep-alive connection after a response, so a client sending half a request was kept for ever,
and a few hundred of them (slowloris, a broken proxy) took every file descriptor: no /healthz, no order, no callback,
and no connection to the database or the broker either."""


class CoalescedWrites:
    """A connection's transport whose writes in one turn of the loop leave in one send. uvicorn writes an answer's
    status line and headers, then its body, each straight to the socket: two sends, two TCP segments and two
    wake-ups of the client for every answer. Held until the loop's next turn (the answer's body is written in the
    same turn), they go together. Everything else is the transport's own; closing sends what is held first.
    Measured side by side (payments alone, three alternating pairs, medians): payments' CPU per order placed 0.191
    against 0.229 ms (0.83x, 5,194 against 4,585 orders/s), per callback 0.223 against 0.237 ms."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self._send)
        self._held.append(bytes(data))

    def _send(self) -> None:
        if not self._held:
            return
        data = b"".join(self._held) if len(self._held) > 1 else self._held[0]
        self._held.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._send()
        self._transport.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


def with_headers_deadline(protocol: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol closing a connection whose request headers do not all come within
    HEADERS_WITHIN_S, and sending what it writes in a turn of the loop at once (CoalescedWrites); another protocol
    (h11, when httptools is missing) as it is."""
    if not hasattr(protocol, "on_headers_complete") or not hasattr(protocol, "on_message_begin"):
        return protocol

    class HeadersDeadline(protocol):  # type: ignore[valid-type,misc]
        _headers_late: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(CoalescedWrites(transport, self.loop))  # type: ignore[arg-type]
            self._arm_headers_deadline()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_headers_deadline()

        def on_headers_complete(self) -> None:
            if self._headers_late is not None:
                self._headers_late.cancel()
                self._headers_late = None
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._headers_late is not None:
                self._headers_late.cancel()
            super().connection_lost(exc)

        def _arm_headers_deadline(self) -> None:
            if self._headers_late is None:
                self._headers_late = self.loop.call_later(HEADERS_WITHIN_S, self._close_late_headers)

        def _close_late_headers(self) -> None:
            self._headers_late = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeadersDeadline


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside a process that owns its signals: SIGTERM stops the whole service, not just HTTP. Sockets
    handed to it are served through an Acceptor each."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is None:
            await super().startup(sockets)
            return
        await super().startup(sockets=[])  # uvicorn's own start (state, lifespan) with no server of its own
        factory = functools.partial(  # what uvicorn's own servers make for each connection (typed as a bare Protocol)
            with_headers_deadline(self.config.http_protocol_class),  # type: ignore[call-arg]
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )
        self.servers = [Acceptor(sock, factory, self.config.backlog) for sock in sockets]  # type: ignore[misc]


def _listening_socket(host: str, port: int, *, shared: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"HTTP cannot listen on {host}:{port}: {exc.strerror}") from None
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
    sockets = [_listening_socket(host, port, shared=shared)]
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
