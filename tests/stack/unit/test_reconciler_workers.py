"""The reconciler side of the local stack is several worker processes handled as one: a SIGKILL takes all of
them, and only a worker that stopped itself with exit code 75 is started again."""

import sys
import time
from pathlib import Path

from credited.stack.processes import Child, Workers


def process(name: str, code: str, tmp_path: Path) -> Child:
    return Child(name, [sys.executable, "-c", code], log_path=tmp_path / f"{name}.log")


def ended(child: Child) -> None:
    deadline = time.monotonic() + 10
    while child.alive() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_side_is_alive_while_all_its_workers_are_and_a_kill_ends_them_all(tmp_path: Path) -> None:
    side = Workers("reconciler", [process(f"w{i}", "import time; time.sleep(30)", tmp_path) for i in (1, 2)])
    side.start()
    try:
        assert side.alive() and side.exit_code() is None
        side.kill()
        assert not any(m.alive() for m in side.members)
        assert side.exit_code() is not None
    finally:
        side.stop()


def test_only_the_worker_that_exited_with_75_is_started_again(tmp_path: Path) -> None:
    asking = process("w1", "raise SystemExit(75)", tmp_path)
    running = process("w2", "import time; time.sleep(30)", tmp_path)
    side = Workers("reconciler", [asking, running])
    side.start()
    try:
        ended(asking)
        first_pid, running_pid = asking.pid, running.pid
        assert side.exit_code() == 75 and not side.alive()
        assert side.revive(75)
        assert asking.pid != first_pid and running.pid == running_pid
    finally:
        side.stop()
