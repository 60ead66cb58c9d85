"""How a service's Kafka clients authenticate: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM,
KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD, turned into what aiokafka (producer, consumer, admin client)
and faust (the reconciler's `broker_credentials`) take.

Each service is its own principal (`User:<service>`); servicekit.kafka_access says what each may do.
"""

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context

from servicekit.settings import ServiceSettings


class KafkaCredentialsMissing(ValueError):
    """SASL is asked for but the username or the password is not set."""


def _credentials(settings: ServiceSettings) -> tuple[str, str]:
    username = settings.kafka_sasl_username or ""
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    missing = [
        name for name, value in (("KAFKA_SASL_USERNAME", username), ("KAFKA_SASL_PASSWORD", password)) if not value
    ]
    if missing:
        raise KafkaCredentialsMissing(f"{settings.kafka_security_protocol} needs {' and '.join(missing)}")
    return username, password


def _tls(settings: ServiceSettings) -> ssl.SSLContext | None:
    # The system's trust store and hostname checks, as any TLS client; SASL_PLAINTEXT has none.
    return create_ssl_context() if settings.kafka_security_protocol == "SASL_SSL" else None


def aiokafka_security(settings: ServiceSettings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient alike."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return {"security_protocol": "PLAINTEXT"}
    username, password = _credentials(settings)
    options: dict[str, Any] = {
        "security_protocol": settings.kafka_security_protocol,
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": username,
        "sasl_plain_password": password,
    }
    context = _tls(settings)
    if context is not None:
        options["ssl_context"] = context
    return options


def faust_credentials(settings: ServiceSettings) -> Any:
    """faust's `broker_credentials` (a faust.SASLCredentials), or None for PLAINTEXT."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    import faust  # only the reconciler runs faust; the other services never import it

    username, password = _credentials(settings)
    # faust takes SASL_SSL from the presence of a TLS context, SASL_PLAINTEXT otherwise.
    return faust.SASLCredentials(
        username=username, password=password, mechanism=settings.kafka_sasl_mechanism, ssl_context=_tls(settings)
    )
