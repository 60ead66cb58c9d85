"""Reads what landed on a topic, for assertions: waits on a condition with a deadline, never a fixed sleep."""

import asyncio
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from contracts.codec import decode
from harness.simulator.run import partition_count


async def read_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    *,
    timeout_s: float = 60,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on `topic` from the start, once `done(records)` holds; fails at the deadline."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not done(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: condition not met within {timeout_s}s; {len(records)} records")
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


def event_types(records: list[ConsumerRecord[bytes, bytes]]) -> list[str]:
    return [decode(r.value, r.headers)[1].event_type for r in records]


async def eventually(check: Callable[[], object], *, timeout_s: float = 60, interval_s: float = 0.1) -> None:
    """Wait until `check()` (sync or async) returns truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


async def read_all(bootstrap: str, topic: str, *, committed: bool = False) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on `topic` up to its end offsets at the time of the call; with `committed`, only what a
    consumer reading committed records (every service's) sees: no record of an aborted transaction."""
    partitions = [TopicPartition(topic, p) for p in range(await partition_count(bootstrap, topic))]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        isolation_level="read_committed" if committed else "read_uncommitted",
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        while True:
            positions = [await consumer.position(tp) for tp in partitions]
            if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                return records
            for part in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(part)
    finally:
        await consumer.stop()
