"""rounds.batches: how the agent's events become rounds, fed by a queue standing in for faust's stream channel."""

import asyncio
from collections.abc import AsyncIterator

from reconciler.adapters.rounds import batches

NEVER = 3600.0
"""A pause longer than any test waits: the source stops there until the test ends."""


class Channel:
    """Events put in (with a pause before each, or none), taken one at a time like faust's stream."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def in_hand(self) -> bool:
        return not self.queue.empty()

    async def events(self) -> AsyncIterator[str]:
        while True:
            yield await self.queue.get()

    async def feed(self, timed: list[tuple[float, str]]) -> None:
        for pause, event in timed:
            if pause:
                await asyncio.sleep(pause)
            self.queue.put_nowait(event)


def rounds_of(timed: list[tuple[float, str]], *, most: int, linger_s: float, expect: int) -> list[list[str]]:
    """The first `expect` rounds that `batches` makes of `timed` (pause before each event, event)."""

    async def run() -> list[list[str]]:
        channel = Channel()
        feeding = asyncio.create_task(channel.feed(timed))
        out: list[list[str]] = []
        async for batch in batches(channel.events(), channel.in_hand, most, linger_s):
            out.append(batch)
            if len(out) == expect:
                break
        feeding.cancel()
        return out

    return asyncio.run(asyncio.wait_for(run(), 10))


FLOW = [*((0.0, f"f{i}") for i in range(30)), (0.6, "f30")]
"""31 events in 0.6 s, more than one per linger in every test: the rounds after them linger. (30 in hand at once
make one round; the rate is counted when the round of the 31st ends the first window.)"""


def rounds_after_flow(tail: list[tuple[float, str]], *, linger_s: float) -> list[list[str]]:
    """The rounds `batches` makes of `tail` after FLOW, up to the one with the tail's last event."""
    last = tail[-1][1]

    async def run() -> list[list[str]]:
        channel = Channel()
        feeding = asyncio.create_task(channel.feed([*FLOW, *tail, (NEVER, "never")]))
        out: list[list[str]] = []
        async for batch in batches(channel.events(), channel.in_hand, 100, linger_s):
            out.append(batch)
            if last in batch:
                break
        feeding.cancel()
        return [b for b in out if not b[0].startswith("f")]

    return asyncio.run(asyncio.wait_for(run(), 10))


def test_events_already_in_hand_make_one_round_and_a_full_round_runs_at_once() -> None:
    timed = [(0, f"e{i}") for i in range(5)]
    assert rounds_of(timed, most=3, linger_s=0, expect=2) == [["e0", "e1", "e2"], ["e3", "e4"]]


def test_without_a_linger_a_trickle_makes_a_round_for_every_event() -> None:
    timed = [(0, "e0"), (0.05, "e1"), (0.05, "e2")]
    assert rounds_of(timed, most=100, linger_s=0, expect=3) == [["e0"], ["e1"], ["e2"]]


def test_a_trickle_of_fewer_events_than_one_per_linger_never_waits_it_even_where_it_would_catch_one() -> None:
    # Pairs 0.03 s apart every 0.28 s: 7 events/s, a linger of 0.05 s would catch each pair's second.
    timed = [(0.0, "e0"), (0.03, "e1"), (0.25, "e2"), (0.03, "e3")]
    timed += [(0.25, "e4"), (0.03, "e5"), (0.25, "e6"), (0.03, "e7")]
    assert rounds_of(timed, most=100, linger_s=0.05, expect=8) == [[e] for _, e in timed]


def test_while_events_flow_a_round_out_of_events_waits_its_linger_once_and_takes_what_arrived_meanwhile() -> None:
    tail = [(0.4, "e0"), (0.02, "e1"), (0.02, "e2"), (1.0, "end")]
    assert rounds_after_flow(tail, linger_s=0.2) == [["e0", "e1", "e2"], ["end"]]


def test_the_linger_is_waited_once_per_round_so_an_event_waits_at_most_about_the_linger() -> None:
    # e1 arrives during e0's linger (0.5 s); e2 0.25 s after it ends, when a second linger would still be waiting:
    # it is the next round's, not this one's.
    tail = [(0.6, "e0"), (0.25, "e1"), (0.5, "e2")]
    assert rounds_after_flow(tail, linger_s=0.5) == [["e0", "e1"], ["e2"]]


def test_once_events_slow_to_fewer_than_one_per_linger_the_rounds_stop_waiting_it() -> None:
    # After the flow, events 0.3 s apart (3/s, against one per 0.05 s); then y1 0.03 s after y0, which a linger
    # would have caught.
    tail = [(0.3, "s0"), (0.3, "s1"), (0.3, "s2"), (0.3, "y0"), (0.03, "y1")]
    assert rounds_after_flow(tail, linger_s=0.05)[-2:] == [["y0"], ["y1"]]
