"""Several copies of a service behind one port (servicekit.runner): the kernel spreads connections over
them, /metrics (on its own port, served once) answers for all of them, and they start, stop and fail together."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import psutil  # type: ignore[import-untyped]
import pytest

from credited.stack.processes import free_port, port_open, wait_for
from tests.conftest import ROOT


@pytest.fixture
def copies() -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    port, metrics_port = free_port(), free_port()
    argv = [sys.executable, "-m", "tests.servicekit.copies_child", str(port), str(metrics_port)]
    supervisor = subprocess.Popen(argv, cwd=ROOT)
    try:
        wait_for(lambda: port_open(port) and len(workers(supervisor)) == 2, timeout_s=30, what="two copies")
        wait_for(lambda: pids_answering(port, 5) == set(workers(supervisor)), timeout_s=60, what="both answering")
        wait_for(lambda: port_open(metrics_port), timeout_s=30, what="the metrics port")
        yield supervisor, port, metrics_port
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()


def workers(supervisor: subprocess.Popen[bytes]) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(supervisor.pid).children()]
    except psutil.NoSuchProcess:
        return []


def pids_answering(port: int, connections: int) -> set[int]:
    seen = set()
    for _ in range(connections):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:  # a new connection each time
            seen.add(client.get("/pid").json()["pid"])
    return seen


def test_copies_share_the_port_and_one_metrics_port_counts_for_all_of_them(copies) -> None:  # type: ignore[no-untyped-def]
    supervisor, port, metrics_port = copies
    before = _requests(metrics_port)
    assert pids_answering(port, 40) == set(workers(supervisor))
    assert _requests(metrics_port) == before + 40
    assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 404  # the public port has none
    assert len(workers(supervisor)) == 2  # the second copy did not try the metrics port (it would have died)


def _requests(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("copies_pid_requests_total "))


def test_sigterm_to_the_supervisor_stops_every_copy(copies) -> None:  # type: ignore[no-untyped-def]
    supervisor, port, _ = copies
    children = workers(supervisor)
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in children)
    assert not port_open(port)


def test_a_copy_that_dies_takes_the_others_down_with_its_exit_code(copies) -> None:  # type: ignore[no-untyped-def]
    supervisor, _, _ = copies
    first, second = workers(supervisor)
    os.kill(first, signal.SIGKILL)
    assert supervisor.wait(timeout=30) == 128 + signal.SIGKILL
    deadline = time.monotonic() + 10
    while psutil.pid_exists(second) and psutil.Process(second).status() != "zombie" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(second) or psutil.Process(second).status() == "zombie"


def test_copies_never_start_on_a_port_another_process_holds() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "tests.servicekit.copies_child", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode != 0
    assert f"127.0.0.1:{port} is in use" in done.stderr
