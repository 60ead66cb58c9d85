"""The bench's sampler counts a process with its descendants from one scan of /proc per sample: the CPU a
child spends is its parent's in the report (a service's copies under its supervisor, PostgreSQL's backends)."""

import os
import signal
import subprocess
import sys
import time

from harness.bench.machine import UsageSampler

SPIN = "import time\nwhile time.process_time() < 1.0: pass\ntime.sleep(60)"


def test_the_cpu_of_a_child_counts_for_its_parent_when_the_parent_forks() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {SPIN!r}])"],
        start_new_session=True,
    )
    try:
        sampler = UsageSampler({"parent": parent.pid, "alone": parent.pid}, forking=frozenset({"parent"}))
        sampler.mark()
        deadline = time.monotonic() + 60
        used = sampler.since_mark(1.0)
        while used["parent"]["cpu_s"] < 0.5 and time.monotonic() < deadline:
            time.sleep(0.2)
            used = sampler.since_mark(1.0)
        assert used["parent"]["cpu_s"] >= 0.5  # the child's second of spin, counted from the mark
        assert used["alone"]["cpu_s"] < 0.2  # the parent only waits
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the child too
        parent.wait()
