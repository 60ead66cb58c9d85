"""The broker and PostgreSQL a benchmark runs on: Apache Kafka from scripts/apache-kafka when it can be
started (Java and the cached jars), else the embedded Tansu; PostgreSQL embedded."""

import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from credited.stack.embedded import FRESH_STATISTICS, EmbeddedKafka, EmbeddedPostgres
from credited.stack.processes import free_port
from harness.bench.statements import SETTINGS as STATEMENT_COUNTING

log = logging.getLogger(__name__)

SCRIPT = Path(__file__).resolve().parents[5] / "scripts" / "apache-kafka"


@dataclass
class Infra:
    run_dir: Path
    want: str = "apache"
    broker: str = ""
    bootstrap: str = ""
    database_url: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    note: str = ""
    broker_env: dict[str, str] = field(default_factory=dict)
    """More environment for scripts/apache-kafka (its KAFKA_SERVER_PROPERTIES, KAFKA_JVM_OPTS, KAFKA_HEAP_OPTS)."""
    _tansu: EmbeddedKafka | None = None
    _postgres: EmbeddedPostgres | None = None
    _kafka_dir: Path | None = None

    def start(self) -> None:
        """Start what is not given: `bootstrap` (with `broker`) and `database_url` may name running servers."""
        try:
            if not self.database_url:
                self._start_postgres()
            if self.bootstrap:
                self.broker = self.broker or "apache"
                return
            if self.want == "apache" and SCRIPT.exists() and shutil.which("java"):
                self._start_apache()
            elif self.want == "apache":
                self.note = "no java on PATH or no scripts/apache-kafka: the embedded broker instead"
            if not self.bootstrap:
                self._tansu = EmbeddedKafka(free_port(), self.run_dir / "logs")
                self._tansu.start()
                self.broker, self.bootstrap = "tansu", self._tansu.bootstrap
                assert self._tansu.child is not None
                self.pids["broker"] = self._tansu.child.pid
        except BaseException:
            self.stop()
            raise

    def _start_postgres(self) -> None:
        pg_dir = self.run_dir / "postgres"
        shutil.rmtree(pg_dir, ignore_errors=True)
        settings = (*STATEMENT_COUNTING, *FRESH_STATISTICS)
        self._postgres = EmbeddedPostgres(pg_dir, free_port(), self.run_dir / "logs", settings=settings)
        self._postgres.start()
        assert self._postgres.child is not None
        self.database_url = self._postgres.dsn
        self.pids["postgres"] = self._postgres.child.pid

    def _start_apache(self) -> None:
        try:
            self.bootstrap, self.pids["broker"] = start_apache_kafka(self.run_dir / "kafka", self.broker_env)
        except RuntimeError as exc:
            log.warning("%s; using the embedded broker", exc)
            self.note = "Apache Kafka did not start: the embedded broker instead"
            return
        self.broker, self._kafka_dir = "apache", self.run_dir / "kafka"

    def stop(self) -> None:
        if self._kafka_dir is not None:
            subprocess.run([str(SCRIPT), "stop", "--dir", str(self._kafka_dir)], check=False, capture_output=True)
            self._kafka_dir = None
        if self._tansu is not None:
            self._tansu.stop()
            self._tansu = None
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None


def start_apache_kafka(kafka_dir: Path, env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """Start Apache Kafka (scripts/apache-kafka) on free ports with its data in `kafka_dir`, `env` added to this
    process's environment for the script: (bootstrap, pid)."""
    shutil.rmtree(kafka_dir, ignore_errors=True)
    ports = ["--port", str(free_port()), "--controller-port", str(free_port())]
    done = subprocess.run(
        [str(SCRIPT), "start", "--dir", str(kafka_dir), *ports],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        raise RuntimeError(f"Apache Kafka did not start: {done.stderr[-500:]}")
    return done.stdout.strip().splitlines()[-1], int((kafka_dir / "kafka.pid").read_text().strip())


@contextlib.contextmanager
def apache_kafka(run_dir: Path, env: Mapping[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """Apache Kafka alone in `run_dir/kafka` (`env` as for start_apache_kafka), stopped on leaving: (bootstrap,
    broker pid)."""
    kafka_dir = run_dir / "kafka"
    started = start_apache_kafka(kafka_dir, env)
    try:
        yield started
    finally:
        subprocess.run([str(SCRIPT), "stop", "--dir", str(kafka_dir)], check=False, capture_output=True)
