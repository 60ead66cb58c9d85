"""`credited bench-hop`: its variants, its arithmetic and report, and one short run of each client through a real
broker. Figures are never asserted, only that the records went through and the report says what was counted."""

from typing import Any

import pytest

from harness.bench.hop import HopOptions, Variant, measure, render, summarise
from tests.conftest import Broker


def step(variant: str, rate: float, cpu_s: float, broker_cpu_s: float | None, polls: int = 100) -> dict[str, Any]:
    return {
        "variant": variant,
        "rate": rate,
        "records": 1000,
        "polls": polls,
        "cpu_s": cpu_s,
        "broker_cpu_s": broker_cpu_s,
        "latency_p50_ms": 20.0,
        "latency_p99_ms": 80.0,
    }


def test_a_variant_is_read_from_its_name_and_named_back_the_same() -> None:
    variant = Variant.parse("confluent:commit=0.5:pace=20")

    assert (variant.client, variant.commit_every_s, variant.pace_ms) == ("confluent", 0.5, 20.0)
    assert variant.name == "confluent:commit=0.5:pace=20"
    assert Variant.parse("aiokafka") == Variant("aiokafka")


@pytest.mark.parametrize("text", ["kafka-python", "aiokafka:linger=5", "aiokafka:commit="])
def test_an_unknown_client_or_option_is_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match="unknown"):
        Variant.parse(text)


def test_the_summary_takes_medians_over_the_rounds_and_ratios_to_the_first_variant_at_each_rate() -> None:
    rows = [
        step("aiokafka", 100, cpu_s=2.0, broker_cpu_s=3.0),
        step("confluent", 100, cpu_s=1.0, broker_cpu_s=4.0),
        step("aiokafka", 100, cpu_s=4.0, broker_cpu_s=3.0),
        step("confluent", 100, cpu_s=1.4, broker_cpu_s=4.0),
        step("aiokafka", 100, cpu_s=3.0, broker_cpu_s=3.0),
        step("confluent", 100, cpu_s=9.0, broker_cpu_s=4.0, polls=50),
    ]

    base, other = summarise(rows)

    assert (base["variant"], base["rounds"], other["variant"]) == ("aiokafka", 3, "confluent")
    assert base["median"]["hop_cpu_ms_per_record"] == pytest.approx(3.0)
    assert other["median"]["hop_cpu_ms_per_record"] == pytest.approx(1.4)
    assert other["ratio"]["hop_cpu_ms_per_record"] == pytest.approx(1.4 / 3.0)
    assert other["median"]["both_cpu_ms_per_record"] == pytest.approx(5.4)
    assert other["ratio"]["broker_cpu_ms_per_record"] == pytest.approx(4.0 / 3.0)
    assert other["median"]["records_per_poll"] == pytest.approx(10.0)
    assert other["median"]["hop_cpu_ms_per_poll"] == pytest.approx(14.0)


def test_a_broker_whose_cpu_was_not_counted_is_reported_so_and_the_rest_still_compared() -> None:
    summary = summarise([step("aiokafka", 400, 1.0, None), step("confluent", 400, 0.5, None)])

    report = render(summary, written="2026-12-04 05:00 UTC", broker="Apache Kafka")

    confluent_row = next(line for line in report.splitlines() if line.startswith("| 400 | confluent |"))
    assert "not counted" in confluent_row
    assert "0.5 (0.50x)" in confluent_row


@pytest.mark.long
def test_each_client_moves_the_fed_records_through_the_hop_on_the_real_broker(broker: Broker) -> None:
    options = HopOptions(
        bootstrap=broker.bootstrap,
        broker_pid=None,  # a broker this test did not start: its CPU is not the hop's business here
        variants=(Variant("aiokafka"), Variant.parse("confluent:commit=0.5")),
        rates=(50.0,),
        rounds=1,
        seconds=2.0,
        idempotence=broker.idempotence,
    )

    rows = measure(options)

    assert [row["variant"] for row in rows] == ["aiokafka", "confluent:commit=0.5"]
    for row in rows:
        assert 50 <= row["records"] <= 150, row  # 50/s fed for the 2 s timed (the feeder runs 3 s longer)
        assert row["polls"] >= 1 and row["cpu_s"] >= 0 and row["broker_cpu_s"] is None
        assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"]
