"""Settings every service reads. Shared infrastructure comes from unprefixed variables; each service adds
its own fields under its own prefix (PAYMENTS_, LEDGER_, RECONCILER_, NOTIFIER_)."""

import logging
import re
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from servicekit.logs import LogFormat, default_format

METRICS_PORT_OFFSET = 1000
"""The /metrics listener's default port is the service's HTTP port plus this."""


def default_metrics_port(http_port: int) -> int:
    """The /metrics port of a service whose HTTP port is `http_port`, unless <SERVICE>_METRICS_PORT says another
    (0, any free port, for a service on any free port)."""
    return http_port + METRICS_PORT_OFFSET if http_port else 0


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


@dataclass(frozen=True, slots=True)
class KafkaTuning:
    """How every credited Kafka client batches: the one place the services (aiokafka) and the reconciler
    (faust) take their batching from, so a producer or consumer of ours never falls back to a library default.

    Producers linger a few milliseconds so the records of one batch of work leave in one request per
    partition, then the caller awaits all acknowledgements once. Consumers take up to `fetch_max_records`
    per poll and commit all partitions' offsets once per poll, after the effects are durable.
    """

    linger_ms: int = 5
    max_batch_bytes: int = 1024 * 1024
    compression: Literal["none", "gzip"] = "none"
    fetch_max_records: int = 2000
    fetch_max_wait_ms: int = 50
    fetch_idle_wait_ms: int = 0
    """How long an idle consumer's fetch waits (servicekit.fetching): how often it asks, not how late it hears.
    No longer than `fetch_max_wait_ms` (as here, unless the settings say otherwise): the same wait always."""


class ServiceSettings(BaseSettings):
    """Kafka, PostgreSQL and HTTP settings shared by all services."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    kafka_bootstrap: str = Field("127.0.0.1:9092", validation_alias=_env("KAFKA_BOOTSTRAP"))
    kafka_broker: Literal["apache", "tansu"] = Field(
        "apache",
        validation_alias=_env("KAFKA_BROKER"),
        description="Which broker this is: Apache Kafka, or the embedded Tansu (no idempotence, fixes needed).",
    )
    kafka_idempotence: bool | None = Field(
        None,
        validation_alias=_env("KAFKA_IDEMPOTENCE"),
        description="Idempotent producer; unset, it follows the broker (Apache Kafka: on; Tansu refuses it).",
    )
    kafka_linger_ms: int = Field(
        5,
        ge=0,
        le=1000,
        validation_alias=_env("KAFKA_LINGER_MS"),
        description="Producers wait this long to fill a batch: a few ms of latency for one request per batch.",
    )
    kafka_batch_bytes: int = Field(
        1024 * 1024, ge=16 * 1024, validation_alias=_env("KAFKA_BATCH_BYTES"), description="Producer batch size."
    )
    kafka_compression: Literal["none", "gzip"] = Field(
        "none",
        validation_alias=_env("KAFKA_COMPRESSION"),
        description="Producer compression. Off by default: our records are small and, with the broker on the "
        "same host or network, compressing costs more CPU than the bytes it saves.",
    )
    kafka_fetch_max_records: int = Field(
        2000, ge=1, le=100_000, validation_alias=_env("KAFKA_FETCH_MAX_RECORDS"), description="Records per poll."
    )
    kafka_fetch_max_wait_ms: int = Field(
        50,
        ge=0,
        le=5000,
        validation_alias=_env("KAFKA_FETCH_MAX_WAIT_MS"),
        description="How long a fetch waits for data while records flow. Tansu answers only at this deadline, "
        "so it stays short.",
    )
    kafka_fetch_idle_wait_ms: int = Field(
        500,
        ge=0,
        le=5000,
        validation_alias=_env("KAFKA_FETCH_IDLE_WAIT_MS"),
        description="How long a fetch waits once its consumer has had no record for a second: Apache Kafka "
        "answers it as soon as a record arrives, so this sets how often an idle consumer asks. Not on Tansu.",
    )
    topic_prefix: str = Field("", validation_alias=_env("CREDITED_TOPIC_PREFIX"))
    topic_partitions: int = Field(6, ge=1, le=1024, validation_alias=_env("CREDITED_TOPIC_PARTITIONS"))
    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/postgres", validation_alias=_env("DATABASE_URL"))
    log_level: str = Field("INFO", validation_alias=_env("CREDITED_LOG_LEVEL"))
    log_format: LogFormat | None = Field(
        None,
        validation_alias=_env("CREDITED_LOG_FORMAT"),
        description="`json` (one object per line) or `console` (readable key=value lines); unset, `console` in "
        "development mode and `json` everywhere else (servicekit.logs).",
    )
    stop_grace_s: float = Field(
        10.0,
        gt=0,
        le=300,
        validation_alias=_env("CREDITED_STOP_GRACE_S"),
        description="On SIGTERM: how long the service may take to finish the requests and the poll in hand; "
        "past it, what still runs is cut short (and logged) and the service exits.",
    )
    http_host: str = "127.0.0.1"
    http_port: int = 0
    db_schema: str = Field("public", pattern=r"^[a-z_][a-z0-9_]{0,62}$")

    # Identity and least privilege (issue 15). Production is the default: a development secret or a
    # development shortcut (loopback receivers, plain http) works only where CREDITED_ENV says development.
    environment: Literal["development", "production"] = Field(
        "production",
        validation_alias=_env("CREDITED_ENV"),
        description="`development` only on a laptop or in tests: development secrets and shortcuts are refused "
        "everywhere else.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", validation_alias=_env("KAFKA_SECURITY_PROTOCOL"), description="How clients reach Kafka."
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        "SCRAM-SHA-512", validation_alias=_env("KAFKA_SASL_MECHANISM"), description="SASL mechanism (SASL_* only)."
    )
    kafka_sasl_username: str | None = Field(
        None, validation_alias=_env("KAFKA_SASL_USERNAME"), description="This service's Kafka principal (User:<name>)."
    )
    kafka_sasl_password: SecretStr | None = Field(
        None, validation_alias=_env("KAFKA_SASL_PASSWORD"), description="The principal's SCRAM password."
    )
    processed_events_keep_s: float = Field(
        14 * 86400,
        ge=86400,
        validation_alias=_env("CREDITED_PROCESSED_EVENTS_KEEP_S"),
        description="How long the ids of applied events are kept to drop a redelivered copy (servicekit.retention): "
        "longer than any topic's retention, past which no copy can come.",
    )
    api_key_cache_ttl_s: float = Field(
        5.0,
        gt=0,
        le=60,
        validation_alias=_env("CREDITED_API_KEY_CACHE_TTL_S"),
        description="How long a looked-up API key is trusted without asking the database again: a revoked key "
        "is refused at most this long after its revocation.",
    )
    identity_schema: str = Field(
        "credited_identity",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        validation_alias=_env("CREDITED_IDENTITY_SCHEMA"),
        description="Schema of the API keys every service reads (`credited keys` writes); tests use their own.",
    )
    status_link_secret: SecretStr | None = Field(
        None,
        validation_alias=_env("CREDITED_STATUS_LINK_SECRET"),
        description="HMAC secret of users' status links; comma-separated during a rotation (signs with the first).",
    )
    max_body_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        validation_alias=_env("CREDITED_MAX_BODY_BYTES"),
        description="Request bodies above this size are refused with 413 before they are read whole.",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        validation_alias=_env("CREDITED_METRICS_HOST"),
        description="Address of the separate /metrics listener (servicekit.metrics_server says why separate).",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the separate /metrics listener, under the service's prefix (PAYMENTS_METRICS_PORT); "
        f"unset, the HTTP port + {METRICS_PORT_OFFSET} (payments 9101, ledger 9102, reconciler 9103, notifier 9104), "
        "or any free port when the HTTP port is 0. Publish it to no public network: Prometheus alone reaches it.",
    )

    @property
    def metrics_address(self) -> tuple[str, int]:
        """Where the /metrics listener listens: CREDITED_METRICS_HOST and <SERVICE>_METRICS_PORT or its default."""
        if self.metrics_port is not None:
            return self.metrics_host, self.metrics_port
        return self.metrics_host, default_metrics_port(self.http_port)

    @field_validator("log_level")
    @classmethod
    def _a_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in logging.getLevelNamesMapping():
            raise ValueError("not a log level: DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @field_validator("database_url")
    @classmethod
    def _a_postgresql_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("postgresql", "postgres"):
            raise ValueError("not a PostgreSQL URL (postgresql://user:password@host:5432/database)")
        return value

    @model_validator(mode="after")
    def _metrics_port_apart(self) -> "ServiceSettings":
        host, port = self.metrics_address
        if port > 65535:
            raise ValueError(f"no default metrics port above HTTP port {self.http_port}: set <SERVICE>_METRICS_PORT")
        if port != 0 and port == self.http_port and host == self.http_host:
            raise ValueError(f"the metrics port {port} is the HTTP port: /metrics must have a port of its own")
        return self

    @model_validator(mode="after")
    def _sasl_as_asked(self) -> "ServiceSettings":
        if self.kafka_security_protocol == "PLAINTEXT":
            given = [
                name
                for name, value in (
                    ("KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                    ("KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
                )
                if value
            ]
            if given:
                # Silently connecting without them would leave a cluster that expects this principal wondering,
                # or, where PLAINTEXT is open, run the service with rights nobody granted it.
                raise ValueError(
                    f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} set but KAFKA_SECURITY_PROTOCOL is "
                    "PLAINTEXT, which sends no credentials: set KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT), "
                    "or unset them"
                )
        if (
            self.environment == "production"
            and self.kafka_security_protocol == "SASL_PLAINTEXT"
            and self.kafka_sasl_mechanism == "PLAIN"
        ):
            raise ValueError(
                "KAFKA_SASL_MECHANISM=PLAIN over KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT sends the password "
                "unencrypted: use SCRAM-SHA-512 or SASL_SSL (CREDITED_ENV=development allows it on a laptop)"
            )
        return self

    @property
    def logs_as(self) -> LogFormat:
        """CREDITED_LOG_FORMAT, or the default of the environment (console in development, else json)."""
        return self.log_format or default_format(self.environment)

    @property
    def kafka_tuning(self) -> KafkaTuning:
        return KafkaTuning(
            linger_ms=self.kafka_linger_ms,
            max_batch_bytes=self.kafka_batch_bytes,
            compression=self.kafka_compression,
            fetch_max_records=self.kafka_fetch_max_records,
            fetch_max_wait_ms=self.kafka_fetch_max_wait_ms,
            # Tansu answers a fetch at its deadline, records or not: an idle wait there would delay them
            fetch_idle_wait_ms=self.kafka_fetch_max_wait_ms
            if self.kafka_broker == "tansu"
            else self.kafka_fetch_idle_wait_ms,
        )

    @property
    def idempotent_producer(self) -> bool:
        if self.kafka_idempotence is not None:
            return self.kafka_idempotence
        return self.kafka_broker == "apache"


S = TypeVar("S", bound=BaseSettings)
_UNSHOWN = re.compile(r"secret|password|key|token|url|dsn", re.IGNORECASE)


def read_settings(settings: type[S], service: str) -> S:
    """`settings` read from the environment; a bad value stops the service (SystemExit, status 1) with one
    sentence naming each variable to fix, not a traceback through pydantic that names a Python field."""
    try:
        return settings()
    except ValidationError as exc:
        problems = [_problem(settings, error) for error in exc.errors()]
    except SettingsError as exc:  # a JSON setting that does not parse: pydantic-settings names the field only
        field = re.search(r'field "([^"]+)"', str(exc))
        name = variable(settings, field.group(1)) if field else "a setting"
        problems = [f"{name}: not valid JSON"]
    raise SystemExit(f"{service} cannot start, fix its settings: {'; '.join(problems)}")


def variable(settings: type[BaseSettings], key: str) -> str:
    """The environment variable that sets `key` (a field's name, or the alias a validation error names)."""
    field = settings.model_fields.get(key)
    if field is None:
        return key  # already the variable: a field read under an alias is named by it
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return f"{settings.model_config.get('env_prefix', '')}{key}".upper()


def _problem(settings: type[BaseSettings], error: Any) -> str:
    loc = [str(part) for part in error["loc"]]
    if not loc:  # a rule across settings: its message names them
        return str(error["msg"]).removeprefix("Value error, ")
    name = variable(settings, loc[0]) + "".join(f"[{part}]" for part in loc[1:])
    message = str(error["msg"]).removeprefix("Value error, ")
    given = error.get("input")
    if isinstance(given, str) and len(given) <= 60 and not _UNSHOWN.search(name):
        return f"{name}={given!r}: {message}"
    return f"{name}: {message}"
