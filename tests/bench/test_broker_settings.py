"""Broker settings side by side: what a `bench-revisions` variant names for the broker reaches the Apache Kafka
its rounds start (scripts/apache-kafka's KAFKA_SERVER_PROPERTIES), as the broker itself reports its settings,
and stays out of the services' environment."""

from pathlib import Path

from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from harness.bench.infra import apache_kafka
from harness.bench.revisions import Variant
from tests.stoppable_broker import SHORT_LIVED_JVM


def test_a_variants_broker_variables_go_to_its_broker_and_the_rest_to_its_services() -> None:
    variant = Variant.parse("main:KAFKA_SERVER_PROPERTIES=num.io.threads=2;num.network.threads=2,KAFKA_LINGER_MS=2")
    assert variant.broker_env == {"KAFKA_SERVER_PROPERTIES": "num.io.threads=2;num.network.threads=2"}
    assert variant.services_env == {"KAFKA_LINGER_MS": "2"}


def test_the_broker_runs_with_the_server_properties_it_was_started_with(tmp_path: Path) -> None:
    env = {"KAFKA_SERVER_PROPERTIES": "num.io.threads=3;num.network.threads=2", "KAFKA_JVM_OPTS": SHORT_LIVED_JVM}
    with apache_kafka(tmp_path, env) as (bootstrap, _):
        admin = AdminClient({"bootstrap.servers": bootstrap})
        resource = ConfigResource(ResourceType.BROKER, "1")
        configs = admin.describe_configs([resource])[resource].result(timeout=30)
    # Apache Kafka's own defaults are 8 and 3: these are the variant's
    assert configs["num.io.threads"].value == "3"
    assert configs["num.network.threads"].value == "2"
