"""No secret that ships with credited works in production.

Every service calls `refuse_development_secrets` first thing at start with the secrets it uses. Outside
development mode (CREDITED_ENV=development, which only the local stack and the tests set; production is the
default) it stops the process, naming every variable that is unset or holds a value published in this
repository (docker-compose's old defaults, the local stack's, the demo's), and how to fix it. In development
mode it only logs which development secrets are in use.
"""

import logging
import os
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import SecretStr

from servicekit.settings import ServiceSettings

log = logging.getLogger(__name__)

STATUS_LINK_DEV_SECRET = "credited-development-status-link-secret"  # noqa: S105 - published on purpose
"""What the local stack signs status links with; refused everywhere else, like every value below."""

PEER_DEV_SECRET = "credited-development-peer-secret"  # noqa: S105 - published on purpose
"""What the local stack's reconciler workers vouch for each other with (reconciler.adapters.peers)."""

DEVELOPMENT_VALUES = frozenset(
    {
        "sim-secret",
        "webhook-secret",
        "webhook-dev-secret",
        "credited-dev-password",
        "admin-dev-password",
        "kafka-dev-password",
        STATUS_LINK_DEV_SECRET,
        PEER_DEV_SECRET,
        # Defaults every scanner tries first.
        "admin",
        "changeme",
        "password",
        "postgres",
        "secret",
    }
)
"""Secrets published in this repository or too common to be secret: refused outside development mode."""

SecretValue = str | SecretStr | Sequence[str] | None


class UnsafeSecrets(SystemExit):
    """The process refuses to start: exits with status 1 and the reason on stderr."""


def _values(value: SecretValue) -> list[str]:
    if value is None:
        return []
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    return [s.strip() for s in value if s.strip()]


def problems(secrets: Mapping[str, SecretValue]) -> list[str]:
    """`NAME is unset` or `NAME is a development value` for each secret that must not reach production."""
    found = []
    for name, value in secrets.items():
        values = _values(value)
        if not values:
            found.append(f"{name} is unset")
        elif any(v.lower() in DEVELOPMENT_VALUES for v in values):
            found.append(f"{name} is a development value published with credited")
    return found


def database_password(database_url: str) -> str | None:
    """The password a DATABASE_URL connects with, found as asyncpg finds it: the URL's own (percent-decoded), else
    its `?password=`, else libpq's PGPASSWORD. Read any other way, a published password spelled `%70ostgres`, or
    given in the query beside a strong PGPASSWORD, would pass the check and connect."""
    parts = urlsplit(database_url)
    if parts.password:
        return unquote(parts.password)
    asked = parse_qs(parts.query).get("password")
    if asked:
        return asked[-1]
    return os.environ.get("PGPASSWORD") or None


def shared_secrets(
    settings: ServiceSettings, *, uses_database: bool = True, signs_status_links: bool = False
) -> dict[str, SecretValue]:
    """The secrets every service has in common, by the variable that sets them."""
    secrets: dict[str, SecretValue] = {}
    if uses_database:
        secrets["the DATABASE_URL password"] = database_password(settings.database_url)
    if signs_status_links:
        secrets["CREDITED_STATUS_LINK_SECRET"] = settings.status_link_secret
    if settings.kafka_security_protocol != "PLAINTEXT":
        secrets["KAFKA_SASL_PASSWORD"] = settings.kafka_sasl_password
    return secrets


def refuse_development_secrets(service: str, settings: ServiceSettings, secrets: Mapping[str, SecretValue]) -> None:
    """Stop `service` (UnsafeSecrets) when any of `secrets` is unset or a development value, unless
    CREDITED_ENV=development."""
    found = problems(secrets)
    if settings.environment == "development":
        if found:
            log.warning("%s runs in development mode (CREDITED_ENV=development): %s", service, "; ".join(found))
        return
    if found:
        raise UnsafeSecrets(
            f"{service} refuses to start in production: {'; '.join(found)}. Set each from your secret store "
            "(or CREDITED_ENV=development on a laptop)."
        )
