"""Sampling profiles of running services with py-spy: where their CPU time goes during a bench step."""

import asyncio
import logging
import re
import signal
import sys
from collections import Counter
from pathlib import Path
from subprocess import DEVNULL
from typing import Any

log = logging.getLogger(__name__)

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:]+)(?::(?P<line>\d+))?\)$")


def _py_spy() -> str:
    return str(Path(sys.executable).with_name("py-spy"))


async def record(pid: int, seconds: float, out: Path, rate: int = 100, subprocesses: bool = True) -> Path | None:
    """Sample `pid` for `seconds` into `out` (collapsed stacks); None if py-spy could not attach."""
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [_py_spy(), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", str(rate)]
    argv += ["--format", "raw", "--output", str(out), "--nonblocking"]
    if subprocesses:  # a service's copies (payments) are its children
        argv.append("--subprocesses")
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0 or not await asyncio.to_thread(out.exists):
        log.warning("py-spy on pid %d failed: %s", pid, err.decode(errors="replace")[-300:])
        return None
    return out


OURS = ("contracts", "servicekit", "credited", "harness", "payments", "ledger", "reconciler", "notifier")
# uvloop runs the event loop in C: a sample whose innermost Python frame is the runner is time in the
# loop itself (waiting for I/O, or uvloop's own C code); on the standard loop (faust's) that is select.
LOOP = "Runner.run (asyncio/runners.py)"
IDLE = {LOOP, "EpollSelector.select (selectors.py)"}
ENTRY = {"<module>", "entry", "run", "main"}


class Recording:
    """py-spy sampling one process until `stop()`; then its hot paths."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.out.parent.mkdir, parents=True, exist_ok=True)
        argv = [
            _py_spy(),
            "record",
            "--pid",
            str(self.pid),
            "--rate",
            str(self.rate),
            "--format",
            "raw",
            "--subprocesses",
        ]
        self._proc = await asyncio.create_subprocess_exec(
            *argv, "--output", str(self.out), "--nonblocking", stdout=DEVNULL, stderr=DEVNULL
        )

    async def stop(self) -> dict[str, Any]:
        """SIGINT makes py-spy write what it sampled."""
        if self._proc is None:
            return {"error": "py-spy was not started"}
        if self._proc.returncode is None:
            self._proc.send_signal(signal.SIGINT)
        await self._proc.wait()
        if not await asyncio.to_thread(self.out.exists):
            return {"error": "py-spy could not sample it"}
        return await asyncio.to_thread(hot_paths, self.out)


def _short(frame: str) -> tuple[str, bool]:
    """`function (path)` with the path from its package on, and whether it is this repository's code."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), False
    path = match["file"]
    for marker in ("site-packages/", "/src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})", path.split("/", 1)[0] in OURS


def hot_paths(collapsed: Path, top: int = 8) -> dict[str, Any]:
    """From py-spy's collapsed stacks: the functions with the most samples on CPU themselves (self), and
    this repository's functions with the most busy samples anywhere below them (inclusive), as shares of
    all samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1][0]] += count
        if frames[-1][0] not in IDLE:
            # the entry chain (module, entry, the runner) is under every sample: not a hot path
            for frame in {name for name, ours in frames if ours and name.split(" ", 1)[0] not in ENTRY}:
                inclusive[frame] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        ranked = [(f, n) for f, n in counter.most_common(top + len(IDLE)) if f not in IDLE][:top]
        return [{"frame": f, "share": round(n / total, 3)} for f, n in ranked] if total else []

    idle = round(sum(own[f] for f in IDLE) / total, 3) if total else None
    return {"samples": total, "idle_or_loop_share": idle, "self": share(own), "inclusive": share(inclusive)}


async def profile_processes(
    pids: dict[str, int], seconds: float, out_dir: Path, alone: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Profile every process in `pids` at once for `seconds`, with its children unless it is in `alone` (the
    benchmark's own process, whose children are the stack); the hot paths of each."""
    names = list(pids)
    files = await asyncio.gather(
        *(record(pids[n], seconds, out_dir / f"{n}.pyspy.txt", subprocesses=n not in alone) for n in names)
    )
    return {
        name: hot_paths(path) if path is not None else {"error": "py-spy could not sample it"}
        for name, path in zip(names, files, strict=True)
    }
