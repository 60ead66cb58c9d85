"""Starts again every service that exits, as compose's `restart: unless-stopped` does (a delay doubling from
0.1 s to 30 s, reset once it has run 10 s), and remembers each exit nobody asked for: a service that stops
itself because a dependency was away is a finding, even when a restart hides it."""

import asyncio
import logging
import time
from dataclasses import dataclass, field

from credited.stack.local import LocalStack

log = logging.getLogger(__name__)


@dataclass
class Exit:
    service: str
    at_s: float
    code: int | None
    last_lines: str


@dataclass
class Supervisor:
    stack: LocalStack
    started_at: float = field(default_factory=time.monotonic)
    exits: list[Exit] = field(default_factory=list)
    restarts: dict[str, int] = field(default_factory=dict)
    _planned: set[str] = field(default_factory=set)
    _delay: dict[str, float] = field(default_factory=dict)
    _due: dict[str, float] = field(default_factory=dict)
    _up_since: dict[str, float] = field(default_factory=dict)

    def kill(self, name: str) -> None:
        """SIGKILL `name` on purpose: its exit is not a finding; it is started again like any other."""
        self._planned.add(name)
        self.stack.services[name].kill()

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    async def run(self) -> None:
        while True:
            for name, child in list(self.stack.services.items()):
                now = time.monotonic()
                if child.alive():
                    if now - self._up_since.get(name, now) > 10:
                        self._delay.pop(name, None)
                    continue
                if name not in self._due:
                    self._note_exit(name, child.exit_code(), child.tail(12))
                    delay = 0.0 if name in self._planned else self._delay.get(name, 0.1)
                    self._planned.discard(name)
                    self._delay[name] = min(max(delay, 0.1) * 2, 30.0)
                    self._due[name] = now + delay
                elif now >= self._due[name]:
                    del self._due[name]
                    await asyncio.to_thread(self.stack.start_service, name)
                    self._up_since[name] = time.monotonic()
                    self.restarts[name] = self.restarts.get(name, 0) + 1
            await asyncio.sleep(0.2)

    def _note_exit(self, name: str, code: int | None, tail: str) -> None:
        if name in self._planned:
            return
        log.warning("%s exited by itself with code %s", name, code)
        self.exits.append(Exit(name, round(self.elapsed(), 1), code, _last_error(tail)))


def _last_error(tail: str) -> str:
    """The most telling line of a log tail: the last one naming an error, else the last line."""
    lines = [line for line in tail.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line or "Exception" in line:
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else ""
