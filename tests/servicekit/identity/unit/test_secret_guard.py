"""Outside development mode a service refuses to start on an unset or published secret, naming it."""

import os

import pytest
from pydantic import SecretStr

from servicekit.secret_guard import (
    STATUS_LINK_DEV_SECRET,
    UnsafeSecrets,
    database_password,
    problems,
    refuse_development_secrets,
    shared_secrets,
)
from servicekit.settings import ServiceSettings

STRONG = "Zq3v9LrT0bXe5mWk8yHn2cJd7fGs4pAu"


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> ServiceSettings:
    for key in list(os.environ):
        if key.startswith(("CREDITED_", "KAFKA_", "DATABASE_", "PG")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return ServiceSettings()


def test_production_is_the_default_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(monkeypatch).environment == "production"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "PAYMENTS_PSP_SECRET_SIM is unset"),
        ("", "PAYMENTS_PSP_SECRET_SIM is unset"),
        ("sim-secret", "PAYMENTS_PSP_SECRET_SIM is a development value published with credited"),
        (f"{STRONG},sim-secret", "PAYMENTS_PSP_SECRET_SIM is a development value published with credited"),
        (SecretStr("Sim-Secret"), "PAYMENTS_PSP_SECRET_SIM is a development value published with credited"),
    ],
)
def test_an_unset_or_development_secret_stops_a_production_start_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str | SecretStr | None, problem: str
) -> None:
    with pytest.raises(UnsafeSecrets) as refused:
        refuse_development_secrets("payments", settings(monkeypatch), {"PAYMENTS_PSP_SECRET_SIM": value})
    assert problem in str(refused.value) and refused.value.code == str(refused.value)
    assert STRONG not in str(refused.value)


def test_every_problem_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(
        monkeypatch,
        DATABASE_URL="postgresql://credited:credited-dev-password@postgres/credited",
        CREDITED_STATUS_LINK_SECRET=STATUS_LINK_DEV_SECRET,
    )
    secrets = {**shared_secrets(s, signs_status_links=True), "NOTIFIER_WEBHOOK_SECRET": "webhook-dev-secret"}
    assert problems(secrets) == [
        "the DATABASE_URL password is a development value published with credited",
        "CREDITED_STATUS_LINK_SECRET is a development value published with credited",
        "NOTIFIER_WEBHOOK_SECRET is a development value published with credited",
    ]


def test_strong_secrets_start_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(
        monkeypatch,
        DATABASE_URL=f"postgresql://credited:{STRONG}@postgres/credited",
        CREDITED_STATUS_LINK_SECRET=f"{STRONG}x,{STRONG}y",
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_USERNAME="payments",
        KAFKA_SASL_PASSWORD=STRONG + "k",
    )
    secrets = {**shared_secrets(s, signs_status_links=True), "PAYMENTS_PSP_SECRET_SIM": [STRONG]}
    assert set(secrets) == {
        "the DATABASE_URL password",
        "CREDITED_STATUS_LINK_SECRET",
        "KAFKA_SASL_PASSWORD",
        "PAYMENTS_PSP_SECRET_SIM",
    }
    refuse_development_secrets("payments", s, secrets)


def test_a_database_url_without_a_password_counts_as_unset_unless_pgpassword_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings(monkeypatch)
    assert database_password("postgresql://postgres@127.0.0.1:5432/postgres") is None
    monkeypatch.setenv("PGPASSWORD", STRONG)
    assert database_password("postgresql://postgres@127.0.0.1:5432/postgres") == STRONG


def test_development_mode_starts_with_development_secrets(monkeypatch: pytest.MonkeyPatch, caplog) -> None:  # type: ignore[no-untyped-def]
    s = settings(monkeypatch, CREDITED_ENV="development", DATABASE_URL="postgresql://postgres@127.0.0.1/postgres")
    refuse_development_secrets("ledger", s, shared_secrets(s))
    assert "the DATABASE_URL password is unset" in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://credited:credited%2Ddev%2Dpassword@postgres/credited",
        "postgresql://postgres:%70ostgres@postgres/postgres",
        "postgresql://credited@postgres/credited?password=credited-dev-password",
    ],
)
def test_a_published_database_password_stops_a_production_start_however_the_url_spells_it(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    s = settings(monkeypatch, DATABASE_URL=url, PGPASSWORD=STRONG)  # asyncpg reads the URL's before PGPASSWORD
    assert database_password(url) in ("credited-dev-password", "postgres")  # what asyncpg would connect with
    with pytest.raises(UnsafeSecrets, match="the DATABASE_URL password is a development value"):
        refuse_development_secrets("ledger", s, shared_secrets(s))
