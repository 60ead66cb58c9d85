"""Waiting out a dependency that is away: exponential backoff with jitter, capped, without limit for transient
errors (servicekit.errors), a few attempts for unknown ones, none for final ones; and which dependencies are
away right now, so /healthz can say not ready while a retry loop waits.

Built on tenacity (its AsyncRetrying works inside the caller's event loop and task, so cancellation at
shutdown goes through the sleep as usual). Jitter spreads the retries of many consumers and instances that all
lost the same broker at the same moment, so they do not come back in one thundering herd.
"""

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar, cast

from tenacity import AsyncRetrying, RetryCallState, stop_never, wait_random_exponential
from tenacity.retry import retry_base

from servicekit.errors import Classified, Dependency, Kind, classify, error_body

log = logging.getLogger(__name__)

T = TypeVar("T")

WATCHED = (Dependency.DATABASE, Dependency.BROKER)
"""The dependencies /healthz names, ready or not."""


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Delays grow from `initial_s` doubling up to `cap_s`, each drawn at random between `initial_s` and the
    current ceiling (full jitter with a floor); transient errors are retried forever, unknown ones until
    `unknown_attempts` attempts in all have failed."""

    initial_s: float = 0.1
    cap_s: float = 30.0
    unknown_attempts: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.cap_s:
            raise ValueError("backoff needs 0 < initial_s <= cap_s")
        if self.unknown_attempts < 1:
            raise ValueError("unknown_attempts must be at least 1")

    def wait(self) -> wait_random_exponential:
        return wait_random_exponential(multiplier=self.initial_s, max=self.cap_s, min=self.initial_s)

    def delay(self, attempt: int) -> float:
        """The wait after the `attempt`th failure in a row (1, 2, ...), for loops that keep their own count."""
        state = RetryCallState(cast(AsyncRetrying, None), None, (), {})  # the wait reads only the attempt number
        state.attempt_number = attempt
        return float(self.wait()(state))

    def grown_to(self, failures: int) -> float | None:
        """The ceiling of the wait after the `failures`th failure in a row when that failure raised it (the first
        does, then each until the cap), else None. A retry loop logs only then: over a failover of a minute, a
        handful of lines instead of one a try."""
        doubled = min(failures, 64) - 1  # how many times the ceiling doubled (tenacity's exponent)
        if doubled > 0 and self.initial_s * 2.0 ** (doubled - 1) >= self.cap_s:
            return None
        return min(self.cap_s, self.initial_s * 2.0**doubled)


@dataclass
class Outage:
    """A retry loop's current run of failures against a dependency (how many in a row, since when), so that it logs
    the first failure, each growth of its backoff and its recovery: a few lines over a failover of a minute, never
    one a try."""

    backoff: BackoffPolicy
    failures: int = 0
    since: float = 0.0
    """When the first failure of the run happened (time.monotonic())."""

    def failed(self) -> float | None:
        """Count a failure: the backoff's new ceiling when this failure raised it (log then), else None."""
        if not self.failures:
            self.since = time.monotonic()
        self.failures += 1
        return self.backoff.grown_to(self.failures)

    def delay(self) -> float:
        """The wait before the next try."""
        return self.backoff.delay(self.failures)

    def ended(self) -> tuple[float, int] | None:
        """Count a success: (seconds since the run's first failure, its failures) when it ends a run (log then),
        else None."""
        if not self.failures:
            return None
        run = (time.monotonic() - self.since, self.failures)
        self.failures = 0
        return run


class Readiness:
    """Which dependencies the service's retry loops found away, since when and why; ready when none is.

    Each part of the service that waits (a consumer, the outbox relay, the start) reports under its own
    `source`: a dependency is away while any source finds it away, so one part that reached the database for a
    read does not declare it back while another still cannot write to it."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        watched: tuple[Dependency, ...] = WATCHED,
        on_change: Callable[[Dependency, bool], None] | None = None,
    ) -> None:
        """`on_change(dependency, ready)` hears each watched dependency as ready at once, then every time one goes
        away (found away by a first source) or comes back (by the last): the service's metrics follow it."""
        self._clock = clock
        self._watched = watched
        self._away: dict[tuple[Dependency, str], tuple[float, str]] = {}
        self._on_change = on_change or (lambda dependency, ready: None)
        for dependency in watched:
            self._on_change(dependency, True)

    def away(self, dependency: Dependency, reason: str, source: str = "") -> None:
        key = (dependency, source)
        if not any(d == dependency for d, _ in self._away):
            log.warning("%s is away (%s): retrying with backoff, not ready until it is back", dependency, reason)
            self._on_change(dependency, False)
        self._away[key] = (self._away.get(key, (self._clock(), ""))[0], reason)

    def back(self, dependency: Dependency, source: str = "") -> None:
        since = self._away.pop((dependency, source), None)
        if since is not None and not any(d == dependency for d, _ in self._away):
            log.warning("%s is back after %.1fs", dependency, self._clock() - since[0])
            self._on_change(dependency, True)

    def back_all(self, source: str) -> None:
        """Everything `source` found away is back (it just succeeded at what it waited for)."""
        for dependency, s in list(self._away):
            if s == source:
                self.back(dependency, source)

    @property
    def ready(self) -> bool:
        return not self._away

    def report(self) -> dict[str, dict[str, object]]:
        """Per dependency away: for how long and the last reason (for /healthz)."""
        now = self._clock()
        report: dict[str, dict[str, object]] = {}
        for (dependency, _), (since, reason) in sorted(self._away.items(), key=lambda item: item[1][0]):
            if dependency.value not in report:
                report[dependency.value] = {"away_s": round(now - since, 1), "reason": reason}
        return report

    def status(self) -> dict[str, dict[str, object]]:
        """Every watched dependency (and any other found away), each ready or not, with why not."""
        away = self.report()
        watched = [d.value for d in self._watched]
        names = watched + [name for name in away if name not in watched]
        return {name: {"ready": False, **away[name]} if name in away else {"ready": True} for name in names}

    def health(self, ok: bool = True, waiting: str = "starting") -> tuple[int, dict[str, object]]:
        """/healthz's status code and body: 200 when `ok` (the service's own check) and nothing is away, else 503
        in credited's error shape naming what it waits for (`waiting`: what the service's own check waits for)."""
        dependencies = self.status()
        if ok and self.ready:
            return 200, {"status": "ok", "dependencies": dependencies}
        away = [name for name, state in dependencies.items() if not state["ready"]]
        detail = f"waiting for {', '.join(away)}" if away else waiting
        return 503, {**error_body("not_ready", detail), "status": "not_ready", "dependencies": dependencies}


class _RetryWorthIt(retry_base):
    """Retry transient errors always, unknown ones while attempts remain, final ones never."""

    def __init__(self, policy: BackoffPolicy, dependency: Dependency | None) -> None:
        self._policy = policy
        self._dependency = dependency

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None or not outcome.failed:
            return False
        exc = outcome.exception()
        if exc is None:
            return False
        return worth_retrying(exc, self._policy, self._dependency, retry_state.attempt_number)


def worth_retrying(exc: BaseException, policy: BackoffPolicy, dependency: Dependency | None, attempt: int) -> bool:
    """Whether `policy` tries again after attempt number `attempt` failed with `exc`: always for a transient error,
    for an unknown one while attempts remain, never for a final one. A call cancelled (the service stopping) or
    interrupted is never tried again: tenacity hands it here like any error, and a retry would swallow the stop (a
    consumer group join cancelled at SIGTERM began again, and the service outlived its stop grace)."""
    if not isinstance(exc, Exception):
        return False
    verdict = classify(exc, dependency=dependency)
    if verdict.kind is Kind.TRANSIENT:
        return True
    return verdict.kind is Kind.UNKNOWN and attempt < policy.unknown_attempts


def retrying(
    policy: BackoffPolicy | None = None,
    *,
    dependency: Dependency | None = None,
    readiness: Readiness | None = None,
    on_retry: Callable[[Classified, float], None] | None = None,
    source: str = "",
) -> AsyncRetrying:
    """A tenacity retrier by this policy: `async for attempt in retrying(...): with attempt: ...`, or
    `await retrying(...)(fn, *args)`. The last error is raised as itself when retrying stops. Each wait marks
    the error's dependency away in `readiness` and calls `on_retry(verdict, delay_s)` (metrics, logs)."""
    policy = policy or BackoffPolicy()

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is None:
            return
        verdict = classify(exc, dependency=dependency)
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        if readiness is not None and verdict.dependency is not None and verdict.transient:
            readiness.away(verdict.dependency, verdict.reason, source)
        if on_retry is not None:
            on_retry(verdict, delay)

    return AsyncRetrying(
        retry=_RetryWorthIt(policy, dependency),
        wait=policy.wait(),
        stop=stop_never,
        reraise=True,
        before_sleep=before_sleep,
    )


async def call_with_retry(
    call: Callable[[], Awaitable[T]],
    policy: BackoffPolicy | None = None,
    *,
    dependency: Dependency,
    readiness: Readiness | None = None,
    on_retry: Callable[[Classified, float], None] | None = None,
    source: str = "",
) -> T:
    """`await call()` until it succeeds or fails for good; then `dependency` counts as back in `readiness`."""
    retrier = retrying(policy, dependency=dependency, readiness=readiness, on_retry=on_retry, source=source)
    result: T = await retrier(call)
    if readiness is not None:
        readiness.back(dependency, source)
    return result
