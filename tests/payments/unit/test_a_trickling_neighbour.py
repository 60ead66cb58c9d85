"""A neighbour that answers the support timeline (or a resend) a byte at a time: PAYMENTS_SUPPORT_TIMEOUT_S says how
long the support API waits for another service before naming it unavailable, so the page answers within it even when
the service keeps the connection alive by trickling. A real HTTP server on the loopback sends its headers at once,
then one byte a second for TRICKLE_S."""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import pytest
from aiohttp import web

from payments.adapters.neighbours import NeighbourFailed, Neighbours
from tests.loopback_http import serving

TIMEOUT_S = 2.0
TRICKLE_S = 20
WITHIN_S = 6.0  # the timeout and a generous margin; trickled to the end the answer would take TRICKLE_S
GIVE_UP_S = 10.0  # the test's own bound, so a hung call fails the test instead of waiting out the trickle
ORDER = "ord_trickle"
KEY = "Bearer ck_live_agent"
T = TypeVar("T")


@pytest.fixture
async def trickling() -> AsyncIterator[str]:
    """The base URL of a service that answers every request 200 with headers at once and a body a byte a second."""
    stop = asyncio.Event()

    async def trickle(request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        answer.content_length = TRICKLE_S
        await answer.prepare(request)
        for _ in range(TRICKLE_S):
            await answer.write(b" ")
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
                return answer
            except TimeoutError:
                pass
        return answer

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", trickle)
    async with serving(app) as port:
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop.set()


async def _bounded(call: Awaitable[T]) -> tuple[T, float]:
    """`call`'s result and how long it took; the test fails if it is still waiting after GIVE_UP_S."""
    started = time.monotonic()
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({task}, timeout=GIVE_UP_S)
    took = time.monotonic() - started
    if not done:
        task.cancel()
        pytest.fail(
            f"still waiting for the trickling neighbour after {took:.1f} s, with a {TIMEOUT_S} s timeout: the timeout"
            f" is per read, and a byte a second never trips it (it would wait out the whole trickle, {TRICKLE_S} s)"
        )
    return task.result(), took


async def test_a_neighbour_trickling_its_timeline_answer_is_named_unavailable_within_the_support_timeout(
    trickling: str,
) -> None:
    neighbours = Neighbours(ledger_url=trickling, reconciler_url=trickling, notifier_url=trickling, timeout_s=TIMEOUT_S)
    try:
        (entries, unavailable), took = await _bounded(neighbours.timeline(ORDER, KEY))
    finally:
        await neighbours.close()
    assert took < WITHIN_S, f"the support timeline took {took:.1f} s with a {TIMEOUT_S} s timeout"
    assert entries == []
    assert sorted(u.source for u in unavailable) == ["ledger", "notifier", "reconciler"]


async def test_a_notifier_trickling_its_resend_answer_fails_within_the_support_timeout(trickling: str) -> None:
    neighbours = Neighbours(ledger_url=None, reconciler_url=None, notifier_url=trickling, timeout_s=TIMEOUT_S)

    async def resend() -> None:
        with pytest.raises(NeighbourFailed):
            await neighbours.resend(ORDER, KEY, "the user did not see it", "idem-1")

    try:
        _, took = await _bounded(resend())
    finally:
        await neighbours.close()
    assert took < WITHIN_S, f"the resend took {took:.1f} s with a {TIMEOUT_S} s timeout"
