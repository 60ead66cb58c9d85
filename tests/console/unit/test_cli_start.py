"""The `credited` command starts without the web framework, the Kafka client or the contracts' models: an
on-call engineer's `credited order` or `credited dlq list --help` should not wait seconds for code it never
runs. Each command loads what it uses when it runs."""

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
