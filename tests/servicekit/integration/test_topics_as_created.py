"""The topics a service finds or creates at start, as the broker has them: the dead-letter topic kept as long as the
deployment keeps it, and the reconciler's joined topics refused when they are not partitioned as its table. Real
broker."""

import re

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from contracts.topics import Topic
from reconciler.config import Settings
from reconciler.main import topics
from servicekit.kafka import DEAD_LETTER_RETENTION_MS, TopicsMisconfigured, ensure_topics
from tests.conftest import Broker
from tests.service_settings import settings_for


async def _retention_ms(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (answer,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        (_, _, _, _, entries), *_ = answer.resources
        return int(next(value for name, value, *_ in entries if name == "retention.ms"))
    finally:
        await admin.close()


async def _made_with_two_partitions(bootstrap: str, topic: str) -> list[str]:
    """Make `topic` with 2 partitions; return the topics the broker listed just before."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        before = await admin.list_topics()
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        return before
    finally:
        await admin.close()


async def test_the_dead_letter_topic_a_service_creates_is_kept_ninety_days_not_the_brokers_week(
    broker: Broker, isolation: str
) -> None:
    """Dead letters are the only record of what was refused until a person replays them: the compose file's topics
    one-shot keeps them 90 days, and a service that creates the topic itself (a laptop, an existing cluster) must
    too. It created it with the broker's default, a week on Apache Kafka."""
    topic = Topic.DEAD_LETTER.qualified(f"{isolation}.")
    await ensure_topics(broker.bootstrap, [topic], 3)

    assert await _retention_ms(broker.bootstrap, topic) == DEAD_LETTER_RETENTION_MS == 90 * 24 * 3600 * 1000


async def test_a_reconciler_refuses_to_start_on_joined_topics_partitioned_unlike_its_table(
    broker: Broker, database_url: str, isolation: str
) -> None:
    """The reconciler joins payments.events and ledger.events partition by partition into a table of
    CREDITED_TOPIC_PARTITIONS partitions (docs/capacity.md: the three must have the same count). A payments.events
    made earlier with fewer partitions put one order's payment and credit on different partitions, and so on
    different workers, while the start went on without a word."""
    settings = settings_for(Settings, broker, database_url, isolation)  # 3 partitions
    payments = Topic.PAYMENTS_EVENTS.qualified(settings.topic_prefix)
    await _made_with_two_partitions(broker.bootstrap, payments)

    said = rf"{re.escape(payments)} has 2 partitions, but CREDITED_TOPIC_PARTITIONS is 3"
    with pytest.raises(TopicsMisconfigured, match=said):
        await topics(settings)()


async def test_a_joined_topic_the_brokers_listing_does_not_show_yet_is_still_checked_when_its_create_says_it_exists(
    broker: Broker, database_url: str, isolation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Apache Kafka answers a metadata request from the broker's cache, which learns a new topic a moment after the
    controller made it (stop 58's CI, a loaded machine: the test above did not raise). The listing missed the
    2-partition payments.events, the create was answered 'already exists', and the start went on unchecked. The
    listing here is the one taken before the topic was made, as a lagging cache gives it."""
    settings = settings_for(Settings, broker, database_url, isolation)  # 3 partitions
    payments = Topic.PAYMENTS_EVENTS.qualified(settings.topic_prefix)
    before = await _made_with_two_partitions(broker.bootstrap, payments)

    async def lagging(self: AIOKafkaAdminClient) -> list[str]:
        return list(before)

    monkeypatch.setattr(AIOKafkaAdminClient, "list_topics", lagging)
    said = rf"{re.escape(payments)} has 2 partitions, but CREDITED_TOPIC_PARTITIONS is 3"
    with pytest.raises(TopicsMisconfigured, match=said):
        await topics(settings)()
