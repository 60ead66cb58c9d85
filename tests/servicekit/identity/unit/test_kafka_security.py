"""KAFKA_SECURITY_PROTOCOL and the SASL settings as aiokafka's and faust's client options."""

import ssl

import pytest
from pydantic import SecretStr

from servicekit.kafka_security import KafkaCredentialsMissing, aiokafka_security, faust_credentials
from servicekit.settings import ServiceSettings


def settings(**fields: object) -> ServiceSettings:
    return ServiceSettings(**fields)  # type: ignore[arg-type]


def test_plaintext_needs_no_credentials() -> None:
    plain = settings(kafka_security_protocol="PLAINTEXT")
    assert aiokafka_security(plain) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(plain) is None


def test_sasl_scram_gives_each_client_the_principal_and_its_password() -> None:
    s = settings(
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="ledger", kafka_sasl_password=SecretStr("pw")
    )
    assert aiokafka_security(s) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "ledger",
        "sasl_plain_password": "pw",
    }
    credentials = faust_credentials(s)
    assert (credentials.username, credentials.password, credentials.mechanism.value) == (
        "ledger",
        "pw",
        "SCRAM-SHA-512",
    )
    assert credentials.protocol.value == "SASL_PLAINTEXT"


def test_sasl_ssl_verifies_the_broker_certificate() -> None:
    s = settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="ledger", kafka_sasl_password=SecretStr("pw"))
    context = aiokafka_security(s)["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert faust_credentials(s).protocol.value == "SASL_SSL"


@pytest.mark.parametrize(
    ("fields", "missing"),
    [
        ({}, "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({"kafka_sasl_username": "ledger"}, "KAFKA_SASL_PASSWORD"),
        ({"kafka_sasl_password": SecretStr("pw")}, "KAFKA_SASL_USERNAME"),
    ],
)
def test_sasl_without_a_username_or_password_is_refused_naming_what_is_missing(
    fields: dict[str, object], missing: str
) -> None:
    s = settings(kafka_security_protocol="SASL_PLAINTEXT", **fields)
    with pytest.raises(KafkaCredentialsMissing, match=f"SASL_PLAINTEXT needs {missing}$"):
        aiokafka_security(s)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"kafka_sasl_username": "ledger"}, "KAFKA_SASL_USERNAME is set"),
        ({"kafka_sasl_password": SecretStr("pw")}, "KAFKA_SASL_PASSWORD is set"),
        (
            {"kafka_sasl_username": "ledger", "kafka_sasl_password": SecretStr("pw")},
            "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are set",
        ),
    ],
)
def test_credentials_given_with_plaintext_are_refused_rather_than_silently_left_unused(
    fields: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError, match=f"{named} but KAFKA_SECURITY_PROTOCOL is PLAINTEXT"):
        settings(kafka_security_protocol="PLAINTEXT", **fields)


def test_plain_mechanism_over_sasl_plaintext_is_refused_in_production_and_allowed_in_development() -> None:
    plain = {
        "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": "PLAIN",
        "kafka_sasl_username": "ledger",
        "kafka_sasl_password": SecretStr("pw"),
    }
    with pytest.raises(ValueError, match="sends the password unencrypted"):
        settings(environment="production", **plain)
    assert settings(environment="development", **plain).kafka_sasl_mechanism == "PLAIN"
    assert settings(environment="production", **{**plain, "kafka_security_protocol": "SASL_SSL"})
