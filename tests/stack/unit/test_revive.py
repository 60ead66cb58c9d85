"""The local stack starts again a service that stopped itself with exit code 75, and only that one."""

import sys
import time
from pathlib import Path

from credited.stack.local import LocalStack, StackConfig
from credited.stack.processes import Child


def exited(name: str, code: int, tmp_path: Path) -> Child:
    child = Child(name, [sys.executable, "-c", f"raise SystemExit({code})"], log_path=tmp_path / f"{name}.log")
    child.start()
    deadline = time.monotonic() + 10
    while child.alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    return child


def test_only_a_service_that_exited_with_75_is_started_again(tmp_path: Path) -> None:
    stack = LocalStack(StackConfig.from_environment(tmp_path))
    started: list[str] = []
    stack.start_service = lambda name: started.append(name)  # type: ignore[method-assign,assignment,return-value]
    stack.services["reconciler"] = exited("reconciler", 75, tmp_path)
    stack.services["ledger"] = exited("ledger", 1, tmp_path)
    running = Child("notifier", [sys.executable, "-c", "import time; time.sleep(30)"], log_path=tmp_path / "n.log")
    running.start()
    stack.services["notifier"] = running
    try:
        assert stack.revive() == ["reconciler"]
        assert started == ["reconciler"]
    finally:
        running.stop()


def test_a_process_that_has_not_ended_has_no_exit_code(tmp_path: Path) -> None:
    child = Child("sleeper", [sys.executable, "-c", "import time; time.sleep(30)"], log_path=tmp_path / "s.log")
    assert child.exit_code() is None
    child.start()
    try:
        assert child.exit_code() is None
    finally:
        child.stop()
    assert child.exit_code() is not None
