"""Child processes that never outlive the stack: each gets its own process group and dies with its parent."""

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """One supervised process, logging to a file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        user: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.user = user
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")  # noqa: SIM115 - the child owns the file for its whole life
        self.proc = subprocess.Popen(
            self.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            user=self.user,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        out.close()
        log.info("started %s (pid %d), log %s", self.name, self.proc.pid, self.log_path)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        """How the process ended; None while it runs or before it started."""
        return None if self.proc is None else self.proc.poll()

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 15.0) -> int | None:
        """Signal the process group, wait, then SIGKILL whatever is left."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs, killing it", self.name, timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, for tests."""
        self.stop(signal.SIGKILL, timeout_s=5)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


_LOWEST_PORT = 10_000


def _ephemeral_floor() -> int:
    """The lowest port the kernel gives outgoing connections (ip_local_port_range; 32768 where unreadable)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()
_next_port = _LOWEST_PORT + (os.getpid() * 7919) % max(1, _ephemeral_floor() - _LOWEST_PORT)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing holds now and that this process has not handed out before.

    It is taken below the kernel's ephemeral range: a port from bind(0) is an ephemeral one, and any process's
    outgoing connection may take it before the server it was meant for binds it (a reconciler's metrics listener
    lost its port that way in CI while a test broker started). Each process walks the range from its own
    starting point, so two test runs side by side rarely meet, and a port one holds is skipped by the other."""
    global _next_port
    floor = _ephemeral_floor()
    span = max(1, floor - _LOWEST_PORT)
    for _ in range(span):
        port, _next_port = _next_port, _LOWEST_PORT + (_next_port + 1 - _LOWEST_PORT) % span
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # every port below the range is taken: an ephemeral one, as before
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for(condition: Callable[[], bool], *, timeout_s: float, what: str, child: Child | None = None) -> None:
    """Poll `condition` until it holds; raise with the child's log tail if the deadline passes or it died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited while waiting for {what}:\n{child.tail()}")
        time.sleep(0.1)
    tail = f":\n{child.tail()}" if child is not None else ""
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}{tail}")


class Workers:
    """Several processes of one service that share its consumer group (the reconciler's workers, which
    share its partitions), handled as one: started, stopped and killed together."""

    def __init__(self, name: str, members: Sequence[Child]) -> None:
        self.name = name
        self.members = list(members)

    def start(self) -> None:
        for member in self.members:
            member.start()

    @property
    def pid(self) -> int:
        return self.members[0].pid

    @property
    def log_path(self) -> Path:
        return self.members[0].log_path

    def alive(self) -> bool:
        return all(member.alive() for member in self.members)

    def exit_code(self) -> int | None:
        """How the first member to end ended; None while all run."""
        return next((code for code in (m.exit_code() for m in self.members) if code is not None), None)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 15.0) -> int | None:
        for member in self.members:  # all signalled first: a worker left alone would take every partition
            if member.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(member.pid, sig)
        codes = [member.stop(sig, timeout_s) for member in self.members]
        return codes[0]

    def kill(self) -> None:
        """SIGKILL every member: a crash of the whole side, for tests."""
        self.stop(signal.SIGKILL, timeout_s=5)

    def revive(self, code: int) -> bool:
        """Start again each member that ended with `code`; whether any was."""
        ended = [m for m in self.members if m.exit_code() == code]
        for member in ended:
            member.start()
        return bool(ended)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(f"[{m.name}]\n{m.tail(lines)}" for m in self.members)
