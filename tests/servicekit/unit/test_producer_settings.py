"""The producer settings that matter for money are explicit: acks=all everywhere, idempotence on Apache Kafka
(and off on Tansu, which refuses it, unless set), and the producer aiokafka builds really has them."""

import pytest

from servicekit.kafka import KafkaPublisher, producer_config
from servicekit.settings import ServiceSettings


def test_every_money_setting_is_explicit_and_acks_are_all() -> None:
    config = producer_config("127.0.0.1:9092", idempotence=True, client_id="ledger")
    assert config["acks"] == "all" and config["enable_idempotence"] is True
    assert {"request_timeout_ms", "retry_backoff_ms", "linger_ms", "max_batch_size", "compression_type"} <= set(config)


@pytest.mark.parametrize(
    ("broker", "explicit", "expected"),
    [("apache", None, True), ("tansu", None, False), ("tansu", True, True), ("apache", False, False)],
)
def test_idempotence_follows_the_broker_unless_set(broker: str, explicit: bool | None, expected: bool) -> None:
    settings = ServiceSettings(kafka_broker=broker, kafka_idempotence=explicit)  # type: ignore[arg-type]
    assert settings.idempotent_producer is expected


@pytest.mark.parametrize("idempotence", [True, False])
async def test_the_publishers_producer_waits_for_all_replicas_and_is_idempotent_when_asked(idempotence: bool) -> None:
    publisher = KafkaPublisher("127.0.0.1:9", idempotence=idempotence, client_id="test")
    producer = publisher._producer
    try:
        assert producer._sender._acks == -1  # "all"
        assert (producer._txn_manager is not None) is idempotence
    finally:
        await producer.stop()


def test_batching_comes_from_the_shared_kafka_settings() -> None:
    settings = ServiceSettings(kafka_linger_ms=7, kafka_batch_bytes=65536, kafka_compression="gzip")  # type: ignore[call-arg]
    config = producer_config("127.0.0.1:9092", idempotence=False, client_id="ledger", tuning=settings.kafka_tuning)
    assert (config["linger_ms"], config["max_batch_size"], config["compression_type"]) == (7, 65536, "gzip")
    assert producer_config("127.0.0.1:9092", idempotence=False, client_id="ledger")["compression_type"] is None
