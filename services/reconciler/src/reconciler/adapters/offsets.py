"""BrokerOffsets: end offsets of the input partitions and the group's committed offsets, from the broker, and
where the records a consumer is handed resume after an offset."""

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from reconciler.adapters.tansu import true_end_offsets

log = logging.getLogger(__name__)

PROBE_S = 5.0
"""How long `first_readable` may take to answer."""


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

    async def first_readable(self, topic: str, partition: int, offset: int, limit: int) -> int | None:
        """The offset of the first record at or after `offset` that a consumer is handed, as the reconciler's
        consumer reads (uncommitted records too); `limit` if none is below it. None when the broker could not
        say within `PROBE_S`.

        A transaction's commit or abort marker takes an offset of the partition that no consumer is ever handed
        (aiokafka skips control batches), so the offsets of a partition a transactional producer wrote to (`credited
        dlq replay` on Apache Kafka) are not dense. A consumer of its own, built for the question, reads from
        `offset`: its position moves past the markers as it fetches (aiokafka's fetcher), records or not."""
        tp = TopicPartition(topic, partition)
        reader = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, group_id=None, **self._security
        )
        try:
            async with asyncio.timeout(PROBE_S):
                await reader.start()
                reader.assign([tp])
                reader.seek(tp, offset)
                while True:
                    fetched = await reader.getmany(tp, timeout_ms=200, max_records=1)
                    if fetched.get(tp):
                        found: int = fetched[tp][0].offset
                        return min(found, limit)
                    if await reader.position(tp) >= limit:
                        return limit
        except (TimeoutError, KafkaError) as exc:
            log.warning("%s[%d]: could not tell where records resume after %d (%r)", topic, partition, offset, exc)
            return None
        finally:
            with contextlib.suppress(Exception):
                await reader.stop()
