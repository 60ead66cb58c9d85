"""A provider call takes at most about its configured timeout (PAYMENTS_PROVIDER_TIMEOUT_S), even when it is
sent again after a connection reset: the query worker leases a query's row for three timeouts (bootstrap), and a
query, a close and a refund each block their round while they wait. The provider here is a raw TCP server on
loopback that holds the first connection most of a timeout and then resets it, and never answers the second."""

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from credited.providers.keys import LocalKeys
from payments.adapters.providers.alipay import AlipayProvider
from payments.domain import RefundRequest
from tests.payments.providers.conftest import alipay

TIMEOUT_S = 1.0
RESET_AFTER_S = 0.8 * TIMEOUT_S
ORDER = "ord_" + "0123456789abcdef" * 2


class ResetThenHang:
    """Reads each request; resets the first connection RESET_AFTER_S later, and holds every later one open."""

    def __init__(self) -> None:
        self.connections = 0
        self._held: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first = self.connections == 1
        await reader.read(65536)
        if not first:
            self._held.append(writer)
            return
        await asyncio.sleep(RESET_AFTER_S)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with an RST
        writer.transport.abort()

    def release(self) -> None:
        for writer in self._held:
            writer.transport.abort()


@pytest.fixture
async def resetting() -> AsyncIterator[tuple[ResetThenHang, str]]:
    server = ResetThenHang()
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.release()
        listening.close()
        await listening.wait_closed()


def query(ours: AlipayProvider) -> Awaitable[object]:
    return ours.query_payment(ORDER)


def close(ours: AlipayProvider) -> Awaitable[object]:
    return ours.close(ORDER)


def refund(ours: AlipayProvider) -> Awaitable[object]:
    return ours.refund(RefundRequest(ORDER, "refund-1", "2026112222001", 600, 600, "CNY"))


@pytest.mark.parametrize("call", [query, close, refund], ids=["query", "close", "refund"])
async def test_a_call_resent_after_a_reset_still_ends_within_about_its_timeout(
    call: Callable[[AlipayProvider], Awaitable[object]], resetting: tuple[ResetThenHang, str], local_keys: LocalKeys
) -> None:
    server, url = resetting
    ours = alipay(local_keys, url, provider_timeout_s=str(TIMEOUT_S))
    started = time.monotonic()
    try:
        answer = await call(ours)
    finally:
        await ours.aclose()
    took = time.monotonic() - started
    assert server.connections == 2, f"the call was not sent again after the reset: {answer}"
    assert took < 1.5 * TIMEOUT_S, (
        f"the call took {took:.2f} s with a {TIMEOUT_S} s timeout (reset after {RESET_AFTER_S} s, then resent "
        f"with a fresh timeout): {answer}"
    )
