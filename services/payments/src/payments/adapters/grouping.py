"""GroupCommit: requests of one kind that arrive together are handled in one database transaction.

A request waits at most `window_s` (a millisecond by default) for others to join it, or less when the group
fills up; while `max_in_flight` groups are committing, new requests gather for the next group, so the busier
payments is, the larger its groups and the fewer its transactions. Each caller gets its own answer once its
group committed. A group that fails is handled again one request at a time, so one bad request fails alone.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Request = TypeVar("Request")
Answer = TypeVar("Answer")


class GroupCommit(Generic[Request, Answer]):
    """Gathers requests for `handle`, which takes a group and returns one answer per request, in order."""

    def __init__(
        self,
        handle: Callable[[Sequence[Request]], Awaitable[Sequence[Answer]]],
        *,
        name: str,
        window_s: float = 0.001,
        max_group: int = 200,
        max_in_flight: int = 2,
    ) -> None:
        self._handle = handle
        self._name = name
        self._window_s = window_s
        self._max_group = max_group
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pending: list[tuple[Request, asyncio.Future[Answer]]] = []
        self._gathering: asyncio.Task[None] | None = None
        self._committing: set[asyncio.Task[None]] = set()
        self.groups = 0
        self.requests = 0

    async def submit(self, request: Request) -> Answer:
        """Handle `request` with whatever else arrives now; its answer once its group committed."""
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending.append((request, answer))
        if self._gathering is None or self._gathering.done():
            self._gathering = asyncio.create_task(self._gather(), name=f"group-commit-{self._name}")
        return await answer

    async def _gather(self) -> None:
        while self._pending:
            await self._slots.acquire()
            if len(self._pending) < self._max_group and self._window_s > 0:
                await asyncio.sleep(self._window_s)
            group, self._pending = self._pending[: self._max_group], self._pending[self._max_group :]
            task = asyncio.create_task(self._commit(group))
            self._committing.add(task)
            task.add_done_callback(self._committing.discard)

    async def _commit(self, group: list[tuple[Request, "asyncio.Future[Answer]"]]) -> None:
        try:
            self.groups += 1
            self.requests += len(group)
            try:
                _answer(group, await self._handle([request for request, _ in group]))
            except Exception as exc:  # noqa: BLE001 - whatever failed the group is tried one by one
                if len(group) == 1:
                    _fail(group[0][1], exc)
                    return
                log.warning("a group of %d %s failed, handling them one by one: %r", len(group), self._name, exc)
                for one in group:
                    await self._alone(one)
        finally:
            self._slots.release()
            for _, answer in group:
                if not answer.done():
                    answer.cancel()  # cancelled mid-commit (shutdown): the caller must not wait forever

    async def _alone(self, one: tuple[Request, "asyncio.Future[Answer]"]) -> None:
        request, answer = one
        try:
            _answer([one], await self._handle([request]))
        except Exception as exc:  # noqa: BLE001 - the caller gets its own failure
            _fail(answer, exc)


def _fail(answer: "asyncio.Future[Answer]", exc: Exception) -> None:
    if not answer.done():  # its caller may have gone (a client that hung up)
        answer.set_exception(exc)


def _answer(group: Sequence[tuple[object, "asyncio.Future[Answer]"]], answers: Sequence[Answer]) -> None:
    for (_, future), answer in zip(group, answers, strict=True):
        if not future.done():
            future.set_result(answer)
