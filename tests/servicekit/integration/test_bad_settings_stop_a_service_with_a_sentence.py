"""A bad value in a setting read at start-up must stop the service with one sentence naming the setting, not a
Python traceback: the on-call engineer reading the container's log after a config change sees the variable to fix."""

import os
import subprocess
import sys

import pytest

from credited.stack.processes import free_port


@pytest.mark.parametrize(
    ("service", "variable", "value"),
    [
        ("payments", "PAYMENTS_PROCESSES", "two"),
        ("ledger", "KAFKA_LINGER_MS", "abc"),
        ("notifier", "CREDITED_STOP_GRACE_S", "-1"),
        ("reconciler", "RECONCILER_CHANNEL_THRESHOLDS_S", "{not json"),
        ("ledger", "DATABASE_URL", "notaurl"),
        ("ledger", "CREDITED_LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_setting_stops_the_service_with_a_sentence_naming_it_not_a_traceback(
    service: str, variable: str, value: str
) -> None:
    """Every service reads its settings with pydantic at start-up and lets the ValidationError (or pydantic-settings'
    SettingsError) escape entry() (servicekit/settings.py, each service's main.py: `Settings()` unguarded), and a
    DATABASE_URL that is no DSN or a CREDITED_LOG_LEVEL that is no level fail later, in asyncpg or logging.config,
    with nothing naming the variable at all: the process dies with a 20-line traceback through pydantic, and
    for a JSON setting the message names the Python field, not the environment variable. An operator must dig the
    variable out of a stack trace (or guess it), and log-based alerting sees an unhandled crash."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CREDITED_", service.upper()))}
    prefix = service.upper()
    ports = {f"{prefix}_HTTP_PORT": str(free_port()), f"{prefix}_METRICS_PORT": str(free_port())}
    env = {**inherited, **ports, "CREDITED_ENV": "development", variable: value}
    out = subprocess.run(
        [sys.executable, "-m", service], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    said = out.stdout + out.stderr
    assert out.returncode != 0, said
    assert "Traceback" not in said, f"{service} died with a traceback on {variable}={value!r}:\n{said[-1500:]}"
    assert variable in said, f"{service} did not name {variable}:\n{said[-1500:]}"
