"""A service joins its consumer groups at once (servicekit.infrastructure.start_all): a join takes about 5 s on the
embedded Tansu broker, so one after another they added up. Pure asyncio, no broker: each start is a function
that waits until the test lets it finish."""

import asyncio

import pytest

from servicekit.infrastructure import start_all


class Start:
    """A consumer's start that is under way until released (or fails with `error` when released)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.began = asyncio.Event()
        self.release = asyncio.Event()
        self.error = error
        self.cancelled = False
        self.finished = False

    async def __call__(self) -> None:
        self.began.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error is not None:
            raise self.error
        self.finished = True


async def test_every_start_is_under_way_before_any_of_them_has_finished() -> None:
    starts = [Start(), Start(), Start()]
    joining = asyncio.create_task(start_all(starts))
    await asyncio.wait_for(asyncio.gather(*(s.began.wait() for s in starts)), timeout=5)
    assert not any(s.finished for s in starts)
    assert not joining.done()
    for start in starts:
        start.release.set()
    await asyncio.wait_for(joining, timeout=5)
    assert all(s.finished for s in starts)


async def test_the_first_start_to_fail_is_raised_as_itself_and_the_others_are_cancelled() -> None:
    refused = PermissionError("the broker refused our credentials")
    failing, waiting = Start(refused), Start()
    joining = asyncio.create_task(start_all([failing, waiting]))
    await asyncio.wait_for(asyncio.gather(failing.began.wait(), waiting.began.wait()), timeout=5)
    failing.release.set()
    with pytest.raises(PermissionError) as raised:
        await asyncio.wait_for(joining, timeout=5)
    assert raised.value is refused
    assert waiting.cancelled and not waiting.finished


async def test_no_start_at_all_is_done_at_once() -> None:
    await asyncio.wait_for(start_all([]), timeout=5)
