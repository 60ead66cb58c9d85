"""faust runs the reconciler with the shared Kafka batching and money-safe producer settings, not its
defaults: linger, batch size, compression and poll size from KafkaTuning, acks from every replica,
idempotence when the broker allows it, and the shared fetch wait instead of faust's fixed 1.5 s."""

from pathlib import Path

import pytest

from reconciler.adapters.faust_app import PRODUCER_REQUEST_TIMEOUT_S
from reconciler.adapters.rounds import CHANGELOG_PATIENCE_S
from reconciler.bootstrap import build
from reconciler.config import Settings


@pytest.mark.parametrize(("broker", "idempotent"), [("apache", True), ("tansu", False)])
async def test_the_worker_batches_as_the_shared_settings_say_and_its_producer_is_idempotent_where_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broker: str, idempotent: bool
) -> None:
    monkeypatch.setenv("RECONCILER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KAFKA_BROKER", broker)
    monkeypatch.setenv("KAFKA_LINGER_MS", "7")
    monkeypatch.setenv("KAFKA_BATCH_BYTES", str(512 * 1024))
    monkeypatch.setenv("KAFKA_COMPRESSION", "gzip")
    monkeypatch.setenv("KAFKA_FETCH_MAX_RECORDS", "1500")
    monkeypatch.setenv("KAFKA_FETCH_MAX_WAIT_MS", "40")
    app = build(Settings())
    producer = {**app.producer._settings_default(), **app.producer._settings_extra()}
    assert producer["linger_ms"] == 7 and producer["max_batch_size"] == 512 * 1024
    assert producer["compression_type"] == "gzip" and producer["acks"] == -1
    assert producer.get("enable_idempotence", False) is idempotent
    # It keeps a record through a broker outage this long, and the worker waits for it longer (rounds.py).
    assert producer["request_timeout_ms"] == PRODUCER_REQUEST_TIMEOUT_S * 1000 < CHANGELOG_PATIENCE_S * 1000
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == 40 and consumer._max_poll_records == 1500
