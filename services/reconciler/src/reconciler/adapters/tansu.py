"""A correction faust needs on the embedded Tansu broker (never applied on Apache Kafka).

Tansu 0.6 answers a ListOffsets "latest" request with the first offset of the partition's last write
batch plus one, not the true end, whenever that batch holds several records. faust reads a table's
changelog only up to that end when it recovers, so it would silently miss the newest state after a
restart. The high watermark in a fetch response is right, so this reads it from a short fetch inside
the last batch and takes the larger of the two.
"""

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)

_APPLIED = False


async def true_end_offsets(
    bootstrap: str, ends: Mapping[TopicPartition, int], probe: AIOKafkaConsumer | None = None
) -> dict[TopicPartition, int]:
    """The real end offset of each non-empty partition, from fetch responses (`probe`: a started,
    group-less consumer to reuse; without one a short-lived consumer is made)."""
    todo = [tp for tp, end in ends.items() if end]
    fixed = dict(ends)
    if not todo:
        return fixed
    own = probe is None
    if probe is None:
        probe = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50, max_partition_fetch_bytes=1
        )
        await probe.start()
    try:
        if probe.assignment() != set(todo):  # a reassignment logs the subscription: not on every tick
            probe.assign(todo)
        for tp in todo:
            probe.seek(tp, max(ends[tp] - 1, 0))
        deadline = time.monotonic() + 10
        while any(probe.highwater(tp) is None for tp in todo) and time.monotonic() < deadline:
            await probe.getmany(*todo, timeout_ms=50)
        for tp in todo:
            fixed[tp] = max(ends[tp], probe.highwater(tp) or 0)
    finally:
        if own:
            await probe.stop()
    return fixed


def correct_faust_end_offsets(bootstrap: str) -> None:
    """Make faust's recovery read every changelog to its true end on Tansu."""
    global _APPLIED
    if _APPLIED:
        return
    original = faust_aiokafka.AIOKafkaConsumerThread._highwaters

    async def _highwaters(self: Any, partitions: Iterable[TopicPartition]) -> Mapping[TopicPartition, int]:
        ends = dict(await original(self, partitions))
        fixed = await true_end_offsets(bootstrap, ends)
        moved = sum(1 for tp in ends if fixed[tp] != ends[tp])
        if moved:
            log.info("tansu: corrected the end offset of %d partitions", moved)
        return fixed

    faust_aiokafka.AIOKafkaConsumerThread._highwaters = _highwaters
    _APPLIED = True


def shorten_faust_fetch_wait(max_wait_ms: int) -> None:
    """Tansu answers a waiting fetch only when its wait runs out (Apache Kafka answers as soon as data
    arrives); faust fixes the wait at 1.5 s, which would delay every event by up to that much."""
    original = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms  # read by AIOKafkaConsumer.start() when it builds its fetcher
        return consumer

    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer
