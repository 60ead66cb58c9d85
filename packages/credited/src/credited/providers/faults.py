"""Faults the local provider injects into its merchant API: a failure (a server error, nothing done) or
a timeout (the request is done, then the answer is held past any client's patience), either scripted for
the next N calls of an operation or drawn at a share of all calls."""

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum


class Operation(StrEnum):
    QUERY = "query"
    REFUND = "refund"
    REFUND_QUERY = "refund_query"
    CLOSE = "close"


class Fault(StrEnum):
    NONE = "none"
    FAIL = "fail"
    TIMEOUT = "timeout"


@dataclass
class Faults:
    failure_share: float = 0.0
    timeout_share: float = 0.0
    hang_s: float = 5.0
    seed: int | None = None
    _script: dict[Operation, list[Fault]] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311 - fault injection, not crypto

    def script(self, operation: Operation, fault: Fault, times: int = 1) -> None:
        """The next `times` calls of `operation` get `fault`, before any share is drawn."""
        self._script.setdefault(operation, []).extend([fault] * times)

    def draw(self, operation: Operation) -> Fault:
        """The fault for this call of `operation`, counted."""
        scripted = self._script.get(operation)
        if scripted:
            fault = scripted.pop(0)
        else:
            roll = self._rng.random()
            fault = (
                Fault.FAIL
                if roll < self.failure_share
                else Fault.TIMEOUT
                if roll < self.failure_share + self.timeout_share
                else Fault.NONE
            )
        self.counts[f"{operation}:{fault}"] += 1
        return fault

    async def hang(self) -> None:
        """Hold a timed-out answer: long enough that the client gave up, short enough to stop cleanly."""
        await asyncio.sleep(self.hang_s)
