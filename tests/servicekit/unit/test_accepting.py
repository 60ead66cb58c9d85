"""A service's HTTP port takes a burst of new connections at once (servicekit.serving.Acceptor), on the uvloop its
services run on, however busy the loop is: every connection waiting when the loop looks is accepted in that
iteration. Counted in loop iterations, not seconds, so a slow machine cannot fail it or pass it."""

import asyncio
import socket

import pytest
import uvloop

from servicekit.serving import Acceptor, serve

BURST = 200
"""More connections than a few iterations would take one at a time (uvloop's own servers took one an iteration)."""


class Counting(asyncio.Protocol):
    """Notes the loop iteration in which its connection reached the protocol."""

    def __init__(self, made: list[int], clock: list[int]) -> None:
        self.made = made
        self.clock = clock

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(self.clock[0])


async def burst_accepted_within() -> tuple[int, int]:
    """Open BURST connections while the loop is away, then count the iterations until every one reached its
    protocol; also how many of them did."""
    clock, made = [0], []
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    acceptor = Acceptor(listening, lambda: Counting(made, clock), backlog=1024)
    # The kernel completes each handshake on its own (the socket listens): all BURST wait in its queue.
    clients = [socket.create_connection(listening.getsockname()) for _ in range(BURST)]
    try:
        while len(made) < BURST and clock[0] < 10 * BURST:
            clock[0] += 1
            await asyncio.sleep(0)  # one loop iteration, as a busy service's tasks give up the loop
        return len(made), max(made, default=clock[0])
    finally:
        acceptor.close()
        await acceptor.wait_closed()
        for client in clients:
            client.close()


def test_a_burst_of_connections_is_accepted_in_the_iteration_that_finds_it_on_uvloop() -> None:
    accepted, iterations = uvloop.run(burst_accepted_within())
    assert accepted == BURST
    assert iterations <= 5, f"{BURST} waiting connections took {iterations} loop iterations to reach the app"


def test_a_burst_of_connections_is_accepted_in_the_iteration_that_finds_it_on_asyncio() -> None:
    accepted, iterations = asyncio.run(burst_accepted_within())
    assert accepted == BURST
    assert iterations <= 5, f"{BURST} waiting connections took {iterations} loop iterations to reach the app"


async def refused_after_close() -> bool:
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    address = listening.getsockname()
    acceptor = Acceptor(listening, asyncio.Protocol, backlog=16)
    acceptor.close()
    await acceptor.wait_closed()
    try:
        socket.create_connection(address, timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_closed_acceptor_takes_no_more_connections() -> None:
    assert uvloop.run(refused_after_close())


def test_a_port_another_process_listens_on_stops_the_service_with_a_sentence_naming_it() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(SystemExit, match=f"HTTP cannot listen on 127.0.0.1:{port}: Address already in use"):
            asyncio.run(serve(asyncio.Protocol, "127.0.0.1", port))  # type: ignore[arg-type]
    finally:
        taken.close()
