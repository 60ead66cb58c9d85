"""A call cancelled while a retrier runs it (the service stopping) ends the retrier: tenacity hands the cancellation
to the retry decision like any error, and retrying it began the call again, so a consumer group join cancelled at
SIGTERM was joined anew and the service outlived its stop grace."""

import asyncio

from servicekit.errors import Dependency
from servicekit.retrying import BackoffPolicy, call_with_retry

FAST = BackoffPolicy(initial_s=0.001, cap_s=0.004, unknown_attempts=3)


async def test_a_call_cancelled_under_a_retrier_is_not_begun_again_and_the_cancellation_ends_it() -> None:
    began: list[int] = []
    joined = asyncio.Event()

    async def join() -> None:
        began.append(1)
        joined.set()
        await asyncio.Event().wait()  # a join the broker holds up

    retried = asyncio.create_task(call_with_retry(join, FAST, dependency=Dependency.BROKER))
    await joined.wait()
    retried.cancel()
    done, _ = await asyncio.wait([retried], timeout=1)
    try:
        assert retried in done, f"still running after the cancellation, the call begun {len(began)} times"
        assert retried.cancelled() and began == [1]
    finally:
        while not retried.done():  # a retrier that took the cancellation for an error: cancel each new attempt
            retried.cancel()
            await asyncio.wait([retried], timeout=0.1)
