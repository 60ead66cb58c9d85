"""The machine a benchmark ran on, and the CPU time and memory each process of the stack used."""

import os
import platform
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]


def source_state(root: Path) -> dict[str, Any]:
    """The commit the services ran from, and the files under services/ and packages/ that differed from it
    (the stack runs from the working tree)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
        return done.stdout if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "services", "packages").splitlines()
    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    return {"commit": commit, "uncommitted": [line[3:] for line in changed if len(line) > 3]}


def describe_machine(broker: str) -> dict[str, Any]:
    """What a reader needs to compare two reports: cores, memory, CPU model, Python, broker, load."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "broker": broker,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def children_by_parent() -> dict[int, list[int]]:
    """Every process's children, from one scan of /proc (psutil's `children()` scans it on every call)."""
    children: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        children.setdefault(proc.info["ppid"], []).append(proc.pid)
    return children


def _tree(pid: int, children: dict[int, list[int]] | None) -> list[int]:
    """The process and, given the map of children, its descendants."""
    tree, i = [pid], 0
    while children is not None and i < len(tree):
        tree += children.get(tree[i], [])
        i += 1
    return tree


def _cpu_and_rss(pid: int, children: dict[int, list[int]] | None) -> tuple[float, int]:
    """CPU seconds (user + system) and resident bytes of a process, with its descendants when given the map of
    children (PostgreSQL's backends, a service's copies). With them, each member's reaped children count too: a
    backend or autovacuum worker that works and exits between two samples leaves its CPU in its parent's
    children times, not nowhere (and one alive at the mark and gone at the end is not subtracted)."""
    cpu, rss = 0.0, 0
    for member in _tree(pid, children):
        try:
            proc = psutil.Process(member)
            times = proc.cpu_times()
            cpu += times.user + times.system
            if children is not None:
                cpu += times.children_user + times.children_system
            rss += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return cpu, rss


@dataclass
class UsageSampler:
    """Samples every process of the stack in a background thread: CPU seconds between marks, peak RSS."""

    pids: dict[str, int]
    interval_s: float = 1.0
    forking: frozenset[str] = frozenset({"postgres"})
    _peak: dict[str, int] = field(default_factory=dict)
    _cpu_mark: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="usage-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def _sample(self) -> dict[str, float]:
        cpu: dict[str, float] = {}
        children = children_by_parent() if self.forking & self.pids.keys() else None
        for name, pid in self.pids.items():
            cpu[name], rss = _cpu_and_rss(pid, children if name in self.forking else None)
            self._peak[name] = max(self._peak.get(name, 0), rss)
        return cpu

    def mark(self) -> None:
        """Start a new interval: the next `since_mark` counts CPU from here and peaks from here."""
        self._cpu_mark = self._sample()
        self._peak = {}

    def since_mark(self, seconds: float) -> dict[str, dict[str, float]]:
        """Per process: CPU seconds since the mark, the share of one core that is, peak RSS in MiB."""
        now = self._sample()
        return {
            name: {
                "cpu_s": round(now[name] - self._cpu_mark.get(name, 0.0), 2),
                "cores": round((now[name] - self._cpu_mark.get(name, 0.0)) / seconds, 2) if seconds > 0 else 0.0,
                "peak_rss_mib": round(self._peak.get(name, 0) / 2**20, 1),
            }
            for name in self.pids
        }
