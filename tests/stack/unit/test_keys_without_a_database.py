"""`credited keys` run where its PostgreSQL does not answer (the stack is not up, DATABASE_URL is a stale
paste) says which database it tried and what to set, in a sentence with exit status 2, not a traceback."""

import os
import socket
import subprocess
import sys

import pytest


def _closed_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "command",
    [["list"], ["create", "--name", "risk-team", "--scope", "review:decide"], ["rotate", "risk-team"], ["revoke", "x"]],
)
def test_credited_keys_against_no_database_names_it_and_the_setting_without_a_traceback(command: list[str]) -> None:
    port = _closed_port()
    env = {**os.environ, "DATABASE_URL": f"postgresql://postgres:hunter2@127.0.0.1:{port}/postgres"}
    done = subprocess.run(
        [sys.executable, "-c", "from credited.cli import app; app()", "keys", *command],
        capture_output=True, text=True, check=False, env=env, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr[-600:]
    assert done.returncode == 2, done.stderr[-600:]
    assert f"127.0.0.1:{port}" in done.stderr and "DATABASE_URL" in done.stderr, done.stderr
    assert "hunter2" not in done.stderr  # the password stays out of the terminal's scrollback
