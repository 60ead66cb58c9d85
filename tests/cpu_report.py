"""Where a pytest run's CPU goes: each test's processor time, its own and that of every process it started
(services, the embedded Tansu and PostgreSQL, browsers), printed for the costliest tests at the end of the run.

CI has two cores and 30 minutes, and two pytest processes share them (scripts/run-tests): a test's wall time
says little about what it takes from the other, its CPU time does. A test is charged with what this process
tree used from its setup to its teardown, so the session's embedded servers' work during the test is charged to
it too. Apache Kafka brokers are not: scripts/apache-kafka detaches them (setsid), so they leave the tree.
"""

import os
import resource
import time
from collections.abc import Iterator

import psutil
import pytest

SHOWN = int(os.environ.get("CREDITED_CPU_REPORT", "15"))
"""How many tests the report names; 0 turns it off."""

_used: dict[str, tuple[float, float]] = {}


def _tree_cpu_s() -> float:
    """CPU seconds used by this process, the children it reaped, and every live descendant (with theirs)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
        except psutil.Error:  # ended between the listing and the reading: its time is in a parent's now
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    if not SHOWN:
        yield
        return
    cpu, wall = _tree_cpu_s(), time.monotonic()
    yield
    _used[item.nodeid] = (_tree_cpu_s() - cpu, time.monotonic() - wall)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _used:
        return
    total = sum(cpu for cpu, _ in _used.values())
    terminalreporter.section(f"CPU: {total:.0f} core-s in {len(_used)} tests; the costliest {SHOWN}")
    for nodeid, (cpu, wall) in sorted(_used.items(), key=lambda kv: -kv[1][0])[:SHOWN]:
        terminalreporter.write_line(f"{cpu:8.1f} core-s {wall:7.1f} s  {nodeid}")
