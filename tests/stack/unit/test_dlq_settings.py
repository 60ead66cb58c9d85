"""`credited dlq` reads the services' settings: a bad one is named, never quoted, since the operator's terminal (and
whatever records it: a shared screen, a CI log, a pasted runbook step) is no place for the passwords beside it."""

import subprocess
import sys
from pathlib import Path

import pytest

CREDITED = Path(sys.executable).parent / "credited"
SASL_PASSWORD = "sasl-pw-9f3c1e"
DATABASE_PASSWORD = "db-pw-7a2d4b"


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"KAFKA_SASL_PASSWORD": SASL_PASSWORD}, "KAFKA_SASL_PASSWORD"),  # given while PLAINTEXT sends none
        ({"DATABASE_URL": f"mysql://credited:{DATABASE_PASSWORD}@db:3306/credited"}, "DATABASE_URL"),
    ],
)
def test_a_bad_setting_stops_dlq_naming_the_variable_without_printing_any_password(
    bad: dict[str, str], named: str
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"postgresql://credited:{DATABASE_PASSWORD}@db:5432/credited",
        "KAFKA_BOOTSTRAP": "127.0.0.1:1",  # never reached: the settings stop the command first
        **bad,
    }
    done = subprocess.run(
        [str(CREDITED), "dlq", "list"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    said = done.stdout + done.stderr
    assert done.returncode == 1
    assert named in said
    assert SASL_PASSWORD not in said
    assert DATABASE_PASSWORD not in said
