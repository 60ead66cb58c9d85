"""CommandTail: reads the reconciler's commands to the ledger as they are sent, so the demo counts the retries
from the broker itself rather than from anyone's say-so."""

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from harness.simulator.run import partition_count

log = logging.getLogger(__name__)


class CommandTail:
    """Every partition of `topic` from its beginning, without a consumer group; `first_sent[order id]` is when
    the order's first message of type `event_type` reached the broker (unix seconds)."""

    def __init__(self, bootstrap: str, topic: str, event_type: str = "RetryCredit") -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._event_type = event_type.encode()
        self.first_sent: dict[str, float] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._polled = asyncio.Event()

    async def _partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self._topic, p) for p in range(await partition_count(self._bootstrap, self._topic))]

    async def run(self) -> None:
        """Read until cancelled."""
        partitions = await self._partitions()
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        if dict(r.headers).get("event_type") == self._event_type and r.key:
                            self.first_sent.setdefault(r.key.decode(), r.timestamp / 1000)
                self._positions = {tp: await consumer.position(tp) for tp in partitions}
                self._polled.set()
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def caught_up(self, timeout_s: float = 10.0) -> None:
        """Wait (at most `timeout_s`) until this tail has read every record the topic has now."""
        partitions = await self._partitions()
        probe = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False)
        await probe.start()
        try:
            ends = await probe.end_offsets(partitions)
        finally:
            await probe.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s

        def behind() -> list[TopicPartition]:
            return [tp for tp, end in ends.items() if self._positions.get(tp, 0) < end]

        while behind() and loop.time() < deadline:
            self._polled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._polled.wait(), deadline - loop.time())
        if behind():
            log.warning("the %s tail did not reach the end of %s in %.0fs", self._topic, behind(), timeout_s)
