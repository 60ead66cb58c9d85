"""Each service started as it is deployed (`python -m <service>`) outside development mode refuses the secrets
published with credited, naming each, before it connects to anything; in development mode it starts on them."""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from credited.stack.processes import free_port, wait_for

STRONG = "Zq3v9LrT0bXe5mWk8yHn2cJd7fGs4pAu"
UNREACHABLE = "127.0.0.1:9"  # discard port: a service that got past the guard would fail later, differently

DEVELOPMENT_VALUES = {
    "DATABASE_URL": "postgresql://credited:credited-dev-password@127.0.0.1:9/credited",
    "KAFKA_BOOTSTRAP": UNREACHABLE,
    "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "KAFKA_SASL_USERNAME": "service",
    "KAFKA_SASL_PASSWORD": "kafka-dev-password",
    "CREDITED_STATUS_LINK_SECRET": "credited-development-status-link-secret",
    "RECONCILER_PEER_SECRET": "credited-development-peer-secret",
    "PAYMENTS_PSP_SECRET_SIM": f"{STRONG},sim-secret",
    "NOTIFIER_WEBHOOK_SECRET": "webhook-secret",
}

REFUSED = {
    "payments": [
        "the DATABASE_URL password",
        "CREDITED_STATUS_LINK_SECRET",
        "KAFKA_SASL_PASSWORD",
        "PAYMENTS_PSP_SECRET_SIM",
    ],
    "ledger": ["the DATABASE_URL password", "KAFKA_SASL_PASSWORD"],
    "reconciler": ["the DATABASE_URL password", "KAFKA_SASL_PASSWORD", "RECONCILER_PEER_SECRET"],
    "notifier": [
        "the DATABASE_URL password",
        "CREDITED_STATUS_LINK_SECRET",
        "KAFKA_SASL_PASSWORD",
        "NOTIFIER_WEBHOOK_SECRET",
    ],
}


def inherited() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("CREDITED_", "KAFKA_", "DATABASE_", "PG", "PAYMENTS_", "LEDGER_", "RECONCILER_", "NOTIFIER_")
        )
    }


def start(service: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", service], env={**inherited(), **env}, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("service", sorted(REFUSED))
def test_a_service_refuses_to_start_in_production_on_development_secrets_naming_each(service: str) -> None:
    started = start(service, DEVELOPMENT_VALUES)
    assert started.returncode == 1, started.stderr
    refusal = started.stderr.strip().splitlines()[-1]
    assert refusal.startswith(f"{service} refuses to start in production: "), started.stderr
    for name in REFUSED[service]:
        assert f"{name} is a development value published with credited" in refusal
    assert "Traceback" not in started.stderr and STRONG not in started.stderr


def test_payments_without_a_real_provider_refuses_to_start_in_production_and_says_what_to_configure() -> None:
    strong = {**DEVELOPMENT_VALUES, "DATABASE_URL": f"postgresql://credited:{STRONG}@127.0.0.1:9/credited"}
    strong |= {"KAFKA_SASL_PASSWORD": STRONG + "k", "CREDITED_STATUS_LINK_SECRET": STRONG + "s"}
    del strong["PAYMENTS_PSP_SECRET_SIM"]  # no simulated provider's secret either: still no provider at all
    started = start("payments", strong)
    assert started.returncode == 1, started.stderr
    assert started.stderr.strip().splitlines()[-1] == (
        "payments refuses to start in production: no real payment provider is configured (WeChat Pay or Alipay). "
        "Unset every PAYMENTS_PSP_SECRET_<NAME> and configure WeChat Pay (PAYMENTS_WECHATPAY_MCHID and its keys) "
        "or Alipay (PAYMENTS_ALIPAY_APP_ID and its keys) (or CREDITED_ENV=development on a laptop)."
    )


def test_in_development_mode_the_ledger_gets_past_the_guard_on_development_secrets(tmp_path: Path) -> None:
    # Past the guard, with nothing listening at its database's and broker's addresses, it serves /healthz as
    # not ready and waits for them (a service outlives its dependencies), instead of stopping on its secrets.
    port = free_port()
    log_path = tmp_path / "ledger.log"
    env = {**DEVELOPMENT_VALUES, "CREDITED_ENV": "development", "LEDGER_HTTP_PORT": str(port)}
    env["LEDGER_METRICS_PORT"] = str(free_port())  # its default, the HTTP port + 1000, nobody reserved
    with log_path.open("w") as log:
        ledger = subprocess.Popen([sys.executable, "-m", "ledger"], env={**inherited(), **env}, stdout=log, stderr=log)
    try:
        wait_for(lambda: not_ready(port), timeout_s=120, what="the ledger's /healthz answering 503")
    finally:
        ledger.terminate()
        ledger.wait(timeout=60)
    output = log_path.read_text()
    assert "refuses to start in production" not in output
    assert "ledger runs in development mode (CREDITED_ENV=development)" in output


def not_ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 503
    except httpx.HTTPError:
        return False
