"""How long a fetch waits follows the broker: on Apache Kafka an idle consumer's fetch waits the idle wait
(the broker answers it as soon as a record arrives); Tansu answers only at the deadline, so there it never does."""

import pytest

from servicekit.settings import KafkaTuning, ServiceSettings


@pytest.mark.parametrize(("broker", "idle_ms"), [("apache", 500), ("tansu", 50)])
def test_an_idle_consumer_waits_longer_on_apache_kafka_only(broker: str, idle_ms: int) -> None:
    tuning = ServiceSettings(kafka_broker=broker).kafka_tuning  # type: ignore[arg-type]
    assert (tuning.fetch_max_wait_ms, tuning.fetch_idle_wait_ms) == (50, idle_ms)


def test_the_idle_wait_is_a_setting_and_a_bare_tuning_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_FETCH_IDLE_WAIT_MS", "800")
    assert ServiceSettings().kafka_tuning.fetch_idle_wait_ms == 800
    assert KafkaTuning().fetch_idle_wait_ms <= KafkaTuning().fetch_max_wait_ms
