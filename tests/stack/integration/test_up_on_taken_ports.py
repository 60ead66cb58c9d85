"""`credited up` where its ports are taken, by another program or by a `credited up` already running in the same
directory: it says which port and what to do, exits 2 without a traceback, and leaves the running stack alone.
A second `credited up` once emptied the first one's PostgreSQL data directory before it looked at the ports."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from credited.stack.processes import port_open
from servicekit.settings import METRICS_PORT_OFFSET

CREDITED = [sys.executable, "-c", "from credited.cli import app; app()"]


def _free_base() -> int:
    """A CREDITED_PORT_BASE whose service and /metrics ports (and the second reconciler worker's) are all free."""
    while True:
        base = random.randrange(20_000, 28_000, 10)
        ports = [base + i for i in range(1, 5)] + [base + METRICS_PORT_OFFSET + i for i in (1, 2, 3, 4, 13)]
        if not any(port_open(port) for port in ports):
            return base


def _up(cwd: Path, base: int, out: IO[str] | int) -> subprocess.Popen[str]:
    env = {**os.environ, "CREDITED_PORT_BASE": str(base)}
    argv = [*CREDITED, "up"]
    return subprocess.Popen(
        argv, cwd=cwd, env=env, text=True, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def _stopped(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # `credited up`'s own Ctrl-C: it stops every process it started
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Path, int, Path]]:
    """A `credited up` serving in `tmp_path`: the directory, its port base and its output."""
    base, out = _free_base(), tmp_path / "first.txt"
    with out.open("w") as sink:
        first = _up(tmp_path, base, sink)
    try:
        deadline = time.monotonic() + 180
        while "Ctrl-C stops everything" not in out.read_text():
            assert first.poll() is None and time.monotonic() < deadline, out.read_text()[-2000:]
            time.sleep(0.5)
        yield tmp_path, base, out
    finally:
        _stopped(first)


def test_credited_up_on_a_port_another_program_holds_names_it_and_starts_nothing(tmp_path: Path) -> None:
    base = _free_base()
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", base + 2))
        taken.listen()
        done = _up(tmp_path, base, subprocess.PIPE)
        try:
            output, _ = done.communicate(timeout=60)
        finally:
            _stopped(done)
    assert done.returncode == 2, output[-2000:]
    assert "Traceback" not in output, output[-2000:]
    assert f"port {base + 2} for ledger is in use" in output and "CREDITED_PORT_BASE" in output, output[-2000:]
    assert not (tmp_path / ".credited" / "up" / "postgres").exists()  # nothing was started, then stopped


def test_a_second_credited_up_in_the_same_directory_leaves_the_running_stacks_database_alone(
    running: tuple[Path, int, Path],
) -> None:
    cwd, base, out = running
    done = _up(cwd, base, subprocess.PIPE)
    try:
        output, _ = done.communicate(timeout=60)
    finally:
        _stopped(done)
    database_url = next(w for w in out.read_text().split() if w.startswith("DATABASE_URL=")).split("=", 1)[1]
    keys = subprocess.run(
        [*CREDITED, "keys", "list"],
        capture_output=True, text=True, check=False, timeout=60, env={**os.environ, "DATABASE_URL": database_url},
    )  # fmt: skip
    assert keys.returncode == 0 and "development" in keys.stdout, keys.stdout[-1000:] + keys.stderr[-2000:]
    assert done.returncode == 2 and "Traceback" not in output, output[-2000:]
    assert f"port {base + 1} for payments is in use" in output, output[-2000:]


def test_the_line_credited_up_prints_for_the_cli_sends_credited_order_to_this_stack_on_its_own_ports(
    running: tuple[Path, int, Path],
) -> None:
    """On another CREDITED_PORT_BASE, `credited order` asked the default stack's payments (8101): another stack's
    orders, or nothing, with no sign of it."""
    cwd, base, out = running
    [line] = [line for line in out.read_text().splitlines() if line.startswith("for the credited CLI: export ")]
    exported = dict(pair.split("=", 1) for pair in line.removeprefix("for the credited CLI: export ").split())
    assert exported["CREDITED_PAYMENTS_URL"].endswith(f":{base + 1}"), line
    [key] = json.loads((cwd / ".credited" / "dev-keys.json").read_text()).values()
    env = {**os.environ, **exported, "CREDITED_API_KEY": key}
    asked = subprocess.run(
        [*CREDITED, "order", "ord_nobody_placed"], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert "refused 404" in asked.stderr, asked.stderr[-2000:]  # payments of this stack answered: no such order
