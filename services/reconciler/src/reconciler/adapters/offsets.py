"""BrokerOffsets: end offsets of the input partitions and the group's committed offsets, from the broker."""

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from reconciler.adapters.tansu import true_end_offsets

log = logging.getLogger(__name__)


class BrokerOffsets:
    """A group-less client of its own, so sampling never disturbs faust's consumer."""

    def __init__(self, bootstrap: str, *, tansu: bool, security: Mapping[str, Any] | None = None) -> None:
        self._bootstrap = bootstrap
        self._tansu = tansu
        self._security = dict(security or {})
        self._client: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    async def start(self) -> None:
        """Clients are built here, inside the running loop, never at import or build time."""
        if self._client is None:
            self._client = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                enable_auto_commit=False,
                group_id=None,
                fetch_max_wait_ms=50,
                max_partition_fetch_bytes=1,
                **self._security,
            )
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, **self._security)
            await self._client.start()
            await self._admin.start()

    async def stop(self) -> None:
        if self._client is not None and self._admin is not None:
            await self._client.stop()
            await self._admin.close()
            self._client = self._admin = None

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        assert self._client is not None, "start() first"
        ends: dict[TopicPartition, int] = await self._client.end_offsets(partitions)
        if self._tansu:
            ends = await true_end_offsets(self._bootstrap, ends, probe=self._client)
        return ends

    async def committed(self, group: str, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed offsets (0 where nothing was committed: the group starts at the beginning)."""
        assert self._admin is not None, "start() first"
        found = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
        return {tp: max(0, found[tp].offset) if tp in found else 0 for tp in partitions}
