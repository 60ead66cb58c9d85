"""uvicorn writes an answer's status line and headers, then its body, each straight to the socket: two sends, two TCP
segments and two wake-ups of the client for every answer. The service's protocol (servicekit.serving) sends what is
written in one turn of the loop at once. uvicorn's own protocol, on a transport that records each send."""

import asyncio

import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from servicekit.serving import with_headers_deadline


class Recorded(asyncio.Transport):
    """A connection's transport that keeps each send."""

    def __init__(self) -> None:
        super().__init__()
        self.sends: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after it was closed"
        self.sends.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 8101), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def order(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 201, "headers": [(b"content-length", b"15")]})
    await send({"type": "http.response.body", "body": b'{"order":"o_1"}'})


async def answered(request: bytes) -> Recorded:
    config = uvicorn.Config(order, lifespan="off", log_level="warning")
    config.load()
    protocol = with_headers_deadline(config.http_protocol_class)(  # type: ignore[call-arg]
        config=config, server_state=ServerState(), app_state={}
    )
    transport = Recorded()
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(100):
        await asyncio.sleep(0)
        if transport.sends and transport.sends[-1].endswith(b"}"):
            break
    protocol.connection_lost(None)
    return transport


async def test_an_answers_status_line_headers_and_body_leave_in_one_send() -> None:
    transport = await answered(b"POST /v1/orders HTTP/1.1\r\nhost: payments\r\ncontent-length: 2\r\n\r\n{}")
    (sent,) = transport.sends
    assert sent.startswith(b"HTTP/1.1 201 Created\r\n") and sent.endswith(b'\r\n\r\n{"order":"o_1"}')


async def test_an_answer_that_closes_the_connection_is_sent_whole_before_the_close() -> None:
    request = b"POST /v1/orders HTTP/1.1\r\nhost: payments\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}"
    transport = await answered(request)
    (sent,) = transport.sends
    assert sent.endswith(b'{"order":"o_1"}') and transport.closed
