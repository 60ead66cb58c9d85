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


def test_events_already_in_hand_make_one_round_and_a_full_round_runs_at_once() -> None:
    timed = [(0, f"e{i}") for i in range(5)]
    assert rounds_of(timed, most=3, linger_s=0, expect=2) == [["e0", "e1", "e2"], ["e3", "e4"]]


def test_without_a_linger_a_trickle_makes_a_round_for_every_event() -> None:
    timed = [(0, "e0"), (0.05, "e1"), (0.05, "e2")]
    assert rounds_of(timed, most=100, linger_s=0, expect=3) == [["e0"], ["e1"], ["e2"]]


BURST = [(0.0, "a0"), (0.0, "a1")]
"""Two events in hand at once: a round of two, after which the rounds linger."""


def test_a_trickle_of_single_events_never_waits_the_linger() -> None:
    timed = [(0, "e0"), (0.05, "e1"), (0.05, "e2")]
    assert rounds_of(timed, most=100, linger_s=0.2, expect=3) == [["e0"], ["e1"], ["e2"]]


def test_after_a_round_of_several_events_a_round_out_of_events_waits_its_linger_once_and_takes_what_arrived() -> None:
    timed = [*BURST, (0.1, "e0"), (0.02, "e1"), (0.02, "e2"), (1.0, "e3"), (NEVER, "never")]
    assert rounds_of(timed, most=100, linger_s=0.2, expect=3) == [["a0", "a1"], ["e0", "e1", "e2"], ["e3"]]


def test_a_round_that_gathered_one_event_stops_the_lingering_until_a_round_gathers_more() -> None:
    # e0 lingers (after the burst's round) and catches nothing; e1 comes 0.05 s before e2 but does not wait for it.
    timed = [*BURST, (0.1, "e0"), (0.5, "e1"), (0.05, "e2"), (NEVER, "never")]
    assert rounds_of(timed, most=100, linger_s=0.2, expect=4) == [["a0", "a1"], ["e0"], ["e1"], ["e2"]]


def test_the_linger_is_waited_once_per_round_so_an_event_waits_at_most_about_the_linger() -> None:
    # e1 arrives during e0's linger (0.1 to 0.6 s); e2 at 0.85 s, when a second linger would still be waiting: it
    # is the next round's, not this one's.
    timed = [*BURST, (0.1, "e0"), (0.25, "e1"), (0.5, "e2"), (NEVER, "never")]
    assert rounds_of(timed, most=100, linger_s=0.5, expect=3) == [["a0", "a1"], ["e0", "e1"], ["e2"]]
