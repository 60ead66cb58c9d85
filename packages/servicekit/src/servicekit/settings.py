"""Settings every service reads. Shared infrastructure comes from unprefixed variables; each service adds
its own fields under its own prefix (PAYMENTS_, LEDGER_, RECONCILER_, NOTIFIER_)."""

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


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
    topic_prefix: str = Field("", validation_alias=_env("CREDITED_TOPIC_PREFIX"))
    topic_partitions: int = Field(6, ge=1, le=1024, validation_alias=_env("CREDITED_TOPIC_PARTITIONS"))
    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/postgres", validation_alias=_env("DATABASE_URL"))
    log_level: str = Field("INFO", validation_alias=_env("CREDITED_LOG_LEVEL"))
    http_host: str = "127.0.0.1"
    http_port: int = 0
    db_schema: str = Field("public", pattern=r"^[a-z_][a-z0-9_]{0,62}$")

    @property
    def idempotent_producer(self) -> bool:
        if self.kafka_idempotence is not None:
            return self.kafka_idempotence
        return self.kafka_broker == "apache"
