"""Who holds which partitions: consumer groups as the broker describes them, and topics a deployment creates."""

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import TopicAlreadyExistsError

RECONCILER_APP = "credited-reconciler"
RECONCILER_TABLE = "order-state"


def reconciler_changelog(prefix: str) -> str:
    """The faust table's changelog topic (faust names it `<app id>-<table>-changelog`)."""
    return f"{prefix}{RECONCILER_APP}-{RECONCILER_TABLE}-changelog"


async def create_changelog(bootstrap: str, prefix: str, partitions: int) -> None:
    """Create the reconciler's changelog before the reconciler starts, as docker-compose's topics service does."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [
                    NewTopic(
                        name=reconciler_changelog(prefix),
                        num_partitions=partitions,
                        replication_factor=1,
                        topic_configs={"cleanup.policy": "compact"},
                    )
                ]
            )
    finally:
        await admin.close()


async def assignments(bootstrap: str, groups: list[str]) -> dict[str, list[int | None]]:
    """group -> the number of partitions each member holds, once the group is Stable (an empty list: no
    member, or a rebalance in progress). None for a member: the broker does not say, as the embedded Tansu,
    which describes members without their assignment."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        out: dict[str, list[int | None]] = {}
        for group in groups:
            for response in await admin.describe_consumer_groups([group]):
                for described in response.groups:
                    state, members = described[2], described[5]
                    stable = state == "Stable"
                    out[described[1]] = [_partition_count(member[-1]) for member in members] if stable else []
        return out
    finally:
        await admin.close()


def _partition_count(raw: bytes) -> int | None:
    if not raw:
        return None
    return sum(len(partitions) for _, partitions in ConsumerProtocolMemberAssignment.decode(raw).assignment)
