"""The benchmark's native load generator (wrk running load.lua, harness/bench/wrk.py) against a small scripted
HTTP server on loopback: what its threads write back when the server answers, and when a connection breaks."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import orjson

from harness.bench import wrk
from harness.simulator.run import Truth


class ScriptedPayments:
    """Answers as payments does what load.lua sends (orders, `sim` callbacks, /healthz); the orders whose
    number is in `reset` get their connection closed instead of an answer. Like payments (servicekit's
    HEADERS_WITHIN_S), it closes a connection whose first request has not come `first_within_s` after it opened."""

    def __init__(self, reset: set[int], first_within_s: float = 10.0) -> None:
        self.reset = reset
        self.first_within_s = first_within_s
        self.orders = 0
        self.closed_unused = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\r\n"), self.first_within_s)
            except TimeoutError:
                self.closed_unused += 1
                writer.close()
                return
            while True:
                head = line + await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode().split("\r\n")
                headers = dict(h.lower().split(": ", 1) for h in header_lines if ": " in h)
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                answer = self.answer(request_line.split(" ")[1], body)
                if answer is None:
                    writer.transport.abort()
                    return
                writer.write(
                    b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (answer[0], len(answer[1]), answer[1])
                )
                await writer.drain()
                line = await reader.readuntil(b"\r\n")
        writer.close()

    def answer(self, path: str, body: bytes) -> tuple[int, bytes] | None:
        if path == "/healthz":
            return 200, orjson.dumps({"status": "ok", "dependencies": {}})
        fields = orjson.loads(body)
        if path == "/v1/orders":
            self.orders += 1
            if self.orders in self.reset:
                return None
            return 201, orjson.dumps({"order_id": f"ord-{self.orders}", **fields})
        return 200, orjson.dumps({"order_id": fields["order_id"], "result": "applied"})


@contextlib.asynccontextmanager
async def scripted(payments: ScriptedPayments) -> AsyncIterator[str]:
    server = await asyncio.start_server(payments.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


def pipeline_job(url: str, out: Path, orders: int) -> wrk.WrkJob:
    return wrk.WrkJob(
        url, "pipeline", out, orders, "secret", "t1", rate=40.0, users=2, threads=1, connections=4, max_s=60.0,
        timeout_s=1.0,
    )  # fmt: skip


async def test_the_load_generator_places_and_pays_every_order_and_stops_when_all_are_answered(
    tmp_path: Path,
) -> None:
    async with scripted(ScriptedPayments(reset=set())) as url:
        job = pipeline_job(url, tmp_path / "truth", orders=8)
        result = await wrk.run(job)
    truth = Truth(run_id="t1")
    wrk.read_truth(job, truth)
    assert len(truth.orders) == 8
    assert truth.paid == set(truth.orders)
    assert truth.errors == []
    assert result.lost_requests == 0
    assert result.figures()["generator_lost_requests"] == 0


async def test_the_load_generator_gives_up_on_a_request_whose_connection_broke_and_says_how_many(
    tmp_path: Path,
) -> None:
    # wrk connects again and asks load.lua for the next request: the broken one is never answered. The thread
    # waited for it until wrk's -d duration (max_s, a minute here), and the step's rate was counted over that.
    async with scripted(ScriptedPayments(reset={3})) as url:
        job = pipeline_job(url, tmp_path / "truth", orders=8)
        result = await wrk.run(job)
    truth = Truth(run_id="t1")
    wrk.read_truth(job, truth)
    assert result.lost_requests == 1
    assert result.figures()["generator_lost_requests"] == 1
    assert len(truth.orders) == 7
    assert truth.paid == set(truth.orders)
    assert truth.errors == ["1 requests sent by the load generator were never answered (connection lost)"]
    assert result.duration_s < job.max_s / 2


async def test_no_connection_of_the_load_generator_stays_unused_past_the_servers_deadline(tmp_path: Path) -> None:
    # A connection whose first slot was further ahead than payments' deadline for a first request, or that had
    # no slot at all, was closed by payments under it (read errors): one that wrote an order just then lost it.
    payments = ScriptedPayments(reset=set(), first_within_s=1.0)
    async with scripted(payments) as url:
        job = replace(pipeline_job(url, tmp_path / "truth", orders=8), rate=4.0, connections=12, idle_s=0.4)
        result = await wrk.run(job)
    truth = Truth(run_id="t1")
    wrk.read_truth(job, truth)
    assert payments.closed_unused == 0
    assert result.socket_errors == 0
    assert len(truth.orders) == 8
    assert truth.paid == set(truth.orders)
