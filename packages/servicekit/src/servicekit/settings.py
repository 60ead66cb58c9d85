"""Settings every service reads. Shared infrastructure comes from unprefixed variables; each service adds
its own fields under its own prefix (PAYMENTS_, LEDGER_, RECONCILER_, NOTIFIER_)."""

from dataclasses import dataclass
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
        description="How long a fetch waits for data. Tansu answers only at this deadline, so it stays short.",
    )
    topic_prefix: str = Field("", validation_alias=_env("CREDITED_TOPIC_PREFIX"))
    topic_partitions: int = Field(6, ge=1, le=1024, validation_alias=_env("CREDITED_TOPIC_PARTITIONS"))
    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/postgres", validation_alias=_env("DATABASE_URL"))
    log_level: str = Field("INFO", validation_alias=_env("CREDITED_LOG_LEVEL"))
    http_host: str = "127.0.0.1"
    http_port: int = 0
    db_schema: str = Field("public", pattern=r"^[a-z_][a-z0-9_]{0,62}$")

    @property
    def kafka_tuning(self) -> KafkaTuning:
        return KafkaTuning(
            linger_ms=self.kafka_linger_ms,
            max_batch_bytes=self.kafka_batch_bytes,
            compression=self.kafka_compression,
            fetch_max_records=self.kafka_fetch_max_records,
            fetch_max_wait_ms=self.kafka_fetch_max_wait_ms,
        )

    @property
    def idempotent_producer(self) -> bool:
        if self.kafka_idempotence is not None:
            return self.kafka_idempotence
        return self.kafka_broker == "apache"
