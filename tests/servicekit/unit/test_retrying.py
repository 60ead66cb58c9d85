"""Retrying by the classification: transient errors without limit with capped, jittered backoff; unknown ones
a few times; final ones never. Readiness says which dependency is away while a retry waits."""

import asyncpg
import pytest
from aiokafka import errors as kafka_errors
from tenacity import RetryCallState

from servicekit.errors import Classified, Dependency, Kind
from servicekit.retrying import BackoffPolicy, Outage, Readiness, call_with_retry, retrying

FAST = BackoffPolicy(initial_s=0.001, cap_s=0.004, unknown_attempts=3)


class Flaky:
    """Fails with each of `errors` in turn, then answers."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


async def test_a_transient_error_is_retried_without_limit_and_readiness_follows_it() -> None:
    readiness = Readiness()
    seen: list[Classified] = []
    disk_full = asyncpg.PostgresError.new({"C": "53100", "M": "No space left on device"})
    flaky = Flaky(*[disk_full] * 40)

    async def call() -> str:
        if flaky.calls == 10:
            assert not readiness.ready
            assert readiness.report()["database"]["reason"] == "sqlstate 53100"
        return await flaky()

    result = await call_with_retry(
        call, FAST, dependency=Dependency.DATABASE, readiness=readiness, on_retry=lambda v, _: seen.append(v)
    )
    assert result == "done" and flaky.calls == 41
    assert len(seen) == 40 and {v.kind for v in seen} == {Kind.TRANSIENT}
    assert readiness.ready and readiness.report() == {}


async def test_an_unknown_error_gets_a_few_attempts_then_is_raised_as_itself() -> None:
    flaky = Flaky(*[ValueError("a bug")] * 5)
    with pytest.raises(ValueError, match="a bug"):
        await call_with_retry(flaky, FAST, dependency=Dependency.DATABASE)
    assert flaky.calls == 3


async def test_a_final_error_is_raised_at_once() -> None:
    flaky = Flaky(kafka_errors.TopicAuthorizationFailedError())
    with pytest.raises(kafka_errors.TopicAuthorizationFailedError):
        await call_with_retry(flaky, FAST, dependency=Dependency.BROKER)
    assert flaky.calls == 1


async def test_the_retrier_works_as_a_loop_around_a_block() -> None:
    flaky = Flaky(kafka_errors.KafkaConnectionError(), kafka_errors.NodeNotReadyError())
    async for attempt in retrying(FAST, dependency=Dependency.BROKER):
        with attempt:
            assert await flaky() == "done"
    assert flaky.calls == 3


def test_delays_grow_from_the_floor_to_the_cap_and_are_spread_at_random() -> None:
    policy = BackoffPolicy(initial_s=0.1, cap_s=30.0)
    wait = policy.wait()
    retrier = retrying(policy)

    def delays(attempt: int, n: int = 200) -> list[float]:
        call = RetryCallState(retrier, None, (), {})  # only its attempt number matters to the wait
        call.attempt_number = attempt
        return [wait(call) for _ in range(n)]

    first, tenth, fiftieth = delays(1), delays(10), delays(50)
    assert all(d == pytest.approx(0.1) for d in first)
    assert all(0.1 <= d <= 0.1 * 2**9 for d in tenth) and len({round(d, 6) for d in tenth}) > 100
    assert all(0.1 <= d <= 30.0 for d in fiftieth) and max(fiftieth) > 20


def test_a_policy_without_a_floor_or_attempts_is_refused() -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(initial_s=0, cap_s=1)
    with pytest.raises(ValueError):
        BackoffPolicy(initial_s=2, cap_s=1)
    with pytest.raises(ValueError):
        BackoffPolicy(unknown_attempts=0)


def test_the_metrics_hear_a_dependency_ready_at_once_away_from_its_first_source_and_back_with_its_last() -> None:
    heard: list[tuple[Dependency, bool]] = []
    readiness = Readiness(on_change=lambda dependency, ready: heard.append((dependency, ready)))
    assert heard == [(Dependency.DATABASE, True), (Dependency.BROKER, True)]
    readiness.away(Dependency.DATABASE, "connection refused", "relay")
    readiness.away(Dependency.DATABASE, "connection refused", "consumer")
    readiness.back(Dependency.DATABASE, "relay")  # the consumer still cannot reach it
    assert heard[2:] == [(Dependency.DATABASE, False)]
    readiness.back(Dependency.DATABASE, "consumer")
    assert heard[2:] == [(Dependency.DATABASE, False), (Dependency.DATABASE, True)]


def test_a_retry_loop_is_told_to_log_at_the_first_failure_and_at_each_growth_of_its_backoff_only() -> None:
    backoff = BackoffPolicy(initial_s=0.5, cap_s=4.0)
    assert [backoff.grown_to(n) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, None, None, None, None]


def test_an_outage_counts_its_failures_in_a_row_and_ends_once_with_how_many_there_were() -> None:
    outage = Outage(BackoffPolicy(initial_s=0.5, cap_s=4.0))
    assert outage.ended() is None  # nothing failed: no recovery to tell
    assert [outage.failed() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, None, None]
    assert 0.5 <= outage.delay() <= 4.0
    run = outage.ended()
    assert run is not None and run[0] >= 0 and run[1] == 6
    assert outage.ended() is None and outage.failed() == 0.5  # a new run starts from the first step
