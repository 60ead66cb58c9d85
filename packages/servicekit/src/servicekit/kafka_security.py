"""How a service's Kafka clients authenticate: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM,
KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD, turned into what aiokafka (producer, consumer, admin client)
and faust (the reconciler's `broker_credentials`) take.

Each service is its own principal (`User:<service>`); servicekit.kafka_access says what each may do.
"""

import asyncio
import logging
import ssl
from typing import Any

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from servicekit.settings import ServiceSettings

log = logging.getLogger(__name__)

_REFUSALS = (SaslAuthenticationFailed, AuthenticationFailedError, UnsupportedSaslMechanismError)


class KafkaCredentialsMissing(ValueError):
    """SASL is asked for but the username or the password is not set."""


class KafkaCredentialsRefused(SystemExit):
    """The broker refused the service's SASL credentials: the process stops (status 1) saying so, rather than
    retry what will never work or stop on aiokafka's bare "Unable to bootstrap"."""


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


async def check_credentials(settings: ServiceSettings, *, client_id: str, timeout_s: float = 30) -> None:
    """Authenticate once against the first bootstrap server that answers and raise KafkaCredentialsRefused,
    naming the principal and the broker's reason, when it refuses. aiokafka's clients only log a refusal and
    report "Unable to bootstrap", as for a broker that is away. PLAINTEXT, or no server answering within
    `timeout_s`, passes: the clients' own start reports an absent broker."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return
    options = aiokafka_security(settings)
    for host, port, _ in collect_hosts(settings.kafka_bootstrap):
        try:
            conn = await asyncio.wait_for(create_conn(host, port, client_id=client_id, **options), timeout_s)
        except _REFUSALS as exc:
            raise KafkaCredentialsRefused(
                f"{client_id}: Kafka at {host}:{port} refused User:{options['sasl_plain_username']} "
                f"({settings.kafka_security_protocol}, {settings.kafka_sasl_mechanism}): {exc}. "
                "Check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD (and that the user exists on the cluster)."
            ) from exc
        except (OSError, TimeoutError, KafkaConnectionError) as exc:
            log.warning("could not reach Kafka at %s:%d to check credentials: %r", host, port, exc)
            continue
        conn.close()
        return
