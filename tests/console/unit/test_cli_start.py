"""The `credited` command starts without the web framework, the Kafka client or the contracts' models: an
on-call engineer's `credited order` or `credited dlq list --help` should not wait seconds for code it never
runs. Each command loads what it uses when it runs."""

import os
import socket
import subprocess
import sys

HEAVY = ("fastapi", "starlette", "uvicorn", "aiokafka", "aiohttp", "pydantic", "contracts", "harness")


def test_loading_the_credited_command_loads_no_web_framework_kafka_client_or_models() -> None:
    probe = f"import sys, credited.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"`import credited.cli` loaded {loaded}"


def test_every_command_still_answers_help() -> None:
    for command in (["order"], ["dlq", "list"], ["keys", "create"], ["audit"], ["demo"], ["up"], ["bench"]):
        done = subprocess.run(
            [sys.executable, "-c", "from credited.cli import app; app()", *command, "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0 and "Usage" in done.stdout, (command, done.stderr[-400:])


def test_credited_dlq_against_no_broker_names_the_settings_to_check_without_a_traceback() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"}
    done = subprocess.run(
        [sys.executable, "-c", "from credited.cli import app; app()", "dlq", "list"],
        capture_output=True, text=True, check=False, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-600:]
    assert f"127.0.0.1:{port}" in done.stderr and "KAFKA_BOOTSTRAP, KAFKA_BROKER" in done.stderr
    assert "Traceback" not in done.stderr
