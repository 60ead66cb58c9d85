"""A correction faust needs on the embedded Tansu broker (never applied on Apache Kafka).

Tansu 0.6 answers a ListOffsets "latest" request with the first offset of the partition's last write
batch plus one, not the true end, whenever that batch holds several records. faust reads a table's
changelog only up to that end when it recovers, so it would silently miss the newest state after a
restart. The high watermark in a fetch response is right, so this reads it from a short fetch inside
the last batch and takes the larger of the two (consumer.py and offsets.py apply it on Tansu only).

Only a fetch answered after the seek counts: a reused probe keeps the high watermark of its last fetch, and the
ticker asks the same probe on every tick, so that stale mark, short by every batch written since the last tick,
would stand for the end and let the safe time run past records not read yet.
"""

import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition


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
        # Read and sought with no await between: every fetch answered from here on is one at the new positions.
        before = {tp: probe.last_poll_timestamp(tp) for tp in todo}
        for tp in todo:
            probe.seek(tp, max(ends[tp] - 1, 0))
        deadline = time.monotonic() + 10
        while any(probe.last_poll_timestamp(tp) in (None, before[tp]) for tp in todo) and time.monotonic() < deadline:
            await probe.getmany(*todo, timeout_ms=50)
        for tp in todo:
            fixed[tp] = max(ends[tp], probe.highwater(tp) or 0)
    finally:
        if own:
            await probe.stop()
    return fixed
