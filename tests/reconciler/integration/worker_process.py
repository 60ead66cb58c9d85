"""A reconciler worker as a process, on a test's own topics and a 1-second threshold."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from credited.stack.processes import Child, free_port
from tests.stoppable_broker import service_env


@contextmanager
def worker_process(
    bootstrap: str,
    kind: str,
    database_url: str,
    isolation: str,
    tmp_path: Path,
    *,
    partitions: int = 1,
    **settings: str,
) -> Iterator[Child]:
    """The worker, with reconciler `settings` of the test's own (named without their prefix) on top, on topics of
    `partitions` partitions each."""
    env = service_env(
        "reconciler", bootstrap, kind, database_url, isolation,
        http_port=str(free_port()), threshold_s="1", data_dir=str(tmp_path / "reconciler"), **settings,
    )  # fmt: skip
    env["CREDITED_TOPIC_PARTITIONS"] = str(partitions)
    child = Child("reconciler", [sys.executable, "-m", "reconciler"], log_path=tmp_path / "reconciler.log", env=env)
    child.start()
    try:
        yield child
    finally:
        child.stop()
