"""Kafka adapters: a publisher with money-safe settings, topic creation, and a consumer loop that decodes
at the edge, dead-letters what cannot be decoded or handled, and commits offsets only after the effect."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, TopicAlreadyExistsError

from contracts.base import Message
from contracts.codec import DecodeError, Envelope, Record, decode
from contracts.topics import Topic
from servicekit.metrics import ConsumerMetrics, DeadLetterKind
from servicekit.settings import KafkaTuning

log = logging.getLogger(__name__)


def producer_config(
    bootstrap: str, *, idempotence: bool, client_id: str, tuning: KafkaTuning | None = None
) -> dict[str, object]:
    """Every setting that matters for money, explicit. Idempotence follows the broker (Tansu refuses it)."""
    tuning = tuning or KafkaTuning()
    return {
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": idempotence,
        "linger_ms": tuning.linger_ms,
        "max_batch_size": tuning.max_batch_bytes,
        "request_timeout_ms": 30_000,
        "retry_backoff_ms": 100,
        "compression_type": None if tuning.compression == "none" else tuning.compression,
    }


class KafkaPublisher:
    """Publishes records and waits until the broker acknowledged every one of them."""

    def __init__(
        self,
        bootstrap: str,
        *,
        idempotence: bool,
        client_id: str,
        topic_prefix: str = "",
        tuning: KafkaTuning | None = None,
    ) -> None:
        config = producer_config(bootstrap, idempotence=idempotence, client_id=client_id, tuning=tuning)
        self._producer = AIOKafkaProducer(**config)
        self.topic_prefix = topic_prefix

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, topic: str, record: Record) -> None:
        await self.publish_many([(topic, record)])

    async def publish_many(self, entries: Sequence[tuple[str, Record]]) -> None:
        """Send in order (per partition the broker keeps it) and wait for all acknowledgements."""
        futures = [
            await self._producer.send(topic, value=r.value, key=r.key, headers=list(r.headers)) for topic, r in entries
        ]
        await asyncio.gather(*futures)


async def ensure_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    """Create the topics that do not exist yet (replication 1 on a single broker)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="credited-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name=n, num_partitions=partitions, replication_factor=1) for n in missing]
                )
            log.info("created topics %s with %d partitions", missing, partitions)
    finally:
        await admin.close()


Handler = Callable[[Message, Envelope], Awaitable[None]]


class PermanentFailure(Exception):
    """A message that can never be handled (it violates a rule); it goes to the dead-letter topic."""


TRANSIENT = (OSError, asyncio.TimeoutError, KafkaError)
"""Failures that go away by themselves (database or broker down): retried, never dead-lettered."""


class KafkaConsumerLoop:
    """Consumes topics in a consumer group and calls `handler` once per decoded message, in partition order.

    A record that does not decode, or whose handler raises PermanentFailure or fails `max_attempts` times,
    goes to the dead-letter topic with the reason. Transient failures are retried with backoff until they
    pass: nothing is skipped. Offsets are committed after the batch's effects are durable.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        handler: Handler,
        dead_letters: "DeadLetterPublisher",
        max_attempts: int = 3,
        max_records: int = 500,
        transient: tuple[type[BaseException], ...] = TRANSIENT,
        batch_scope: Callable[[], AbstractAsyncContextManager[object]] | None = None,
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            client_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=max_records,
            # Apache Kafka answers a waiting fetch as soon as data arrives; Tansu waits the full time,
            # so a short wait keeps pay-to-credit latency low on both.
            fetch_max_wait_ms=50,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )
        self._group_id = group_id
        self._handler = handler
        self._dead_letters = dead_letters
        self._max_attempts = max_attempts
        self._transient = transient
        self._batch_scope = batch_scope or contextlib.nullcontext
        self._metrics = metrics
        self._in_flight: dict[TopicPartition, int] = {}
        self.consumed_total = 0
        self.dead_lettered_total = 0

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def run(self) -> None:
        """Consume until cancelled."""
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            # Until a partition's batch is committed, its lag counts from the batch's first record.
            self._in_flight.update((tp, records[0].offset) for tp, records in batches.items())
            for tp, records in batches.items():
                await self._process_batch(records)
                await self._commit(tp, records[-1].offset + 1)
                self._in_flight.pop(tp, None)
                if self._metrics is not None:
                    self._metrics.consumed(tp.topic, len(records))

    async def _process_batch(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """One batch scope (one database transaction) for a partition's batch: a transient failure
        undoes the whole batch, which is then processed again from its first record."""
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._batch_scope():
                    for record in records:
                        await self._process(record)
                return
            except self._transient as exc:
                # Cancelled inside the transaction (shutdown) with the connection gone, the transaction's
                # exit raises a connection error in place of the CancelledError: stop, never retry then.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from exc
                delay = min(0.1 * 2 ** min(attempt, 6), 5.0)
                log.warning(
                    "transient failure in a batch of %d records, retrying in %.1fs: %r", len(records), delay, exc
                )
                await asyncio.sleep(delay)

    async def lag(self) -> dict[tuple[str, int], int]:
        """Records not yet processed per assigned partition: the end offset the broker last reported
        (the last stable offset, as we read committed) minus the first record not yet processed."""
        lags: dict[tuple[str, int], int] = {}
        for tp in list(self._consumer.assignment()):
            if tp not in self._consumer.assignment():
                continue  # moved away during an earlier await of this loop
            try:
                end = self._consumer.last_stable_offset(tp)
                if end is None or end < 0:
                    end = self._consumer.highwater(tp)
                if end is None:
                    continue  # nothing fetched from this partition yet
                position = self._in_flight.get(tp)
                if position is None:
                    position = await asyncio.wait_for(self._consumer.position(tp), timeout=1.0)
            except (IllegalStateError, TimeoutError):
                continue  # the partition moved away or has no position yet; the next sample has it
            lags[(tp.topic, tp.partition)] = end - position
        return lags

    async def observe_lag(self) -> None:
        """Publish the current lag to the metrics (called periodically)."""
        if self._metrics is not None:
            self._metrics.lag(await self.lag())

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            await self._consumer.commit({tp: offset})
        except CommitFailedError as exc:
            # The partition moved to another member; it resumes from the last commit and our
            # effects are idempotent, so the repeat is harmless.
            log.warning("commit of %s@%d failed after a rebalance: %s", tp, offset, exc)

    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.consumed_total += 1
        try:
            message, envelope = decode(record.value, record.headers)
        except DecodeError as exc:
            await self._dead_letter(record, DeadLetterKind.UNDECODABLE, f"undecodable: {exc.reason}")
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._handler(message, envelope)
                return
            except PermanentFailure as exc:
                await self._dead_letter(record, DeadLetterKind.REJECTED, f"rejected: {exc}")
                return
            except self._transient:
                raise
            except Exception as exc:
                log.exception(
                    "handler failed on order %s event %s (attempt %d)", message.order_id, envelope.event_id, attempt
                )
                if attempt >= self._max_attempts:
                    reason = f"handler failed {attempt} times: {exc!r}"[:500]
                    await self._dead_letter(record, DeadLetterKind.HANDLER_FAILED, reason)
                    return
                await asyncio.sleep(0.05 * attempt)

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], kind: DeadLetterKind, reason: str) -> None:
        self.dead_lettered_total += 1
        if self._metrics is not None:
            self._metrics.dead_lettered(kind)
        log.error(
            "dead-lettering %s[%d]@%d key=%r: %s", record.topic, record.partition, record.offset, record.key, reason
        )
        await self._dead_letters.send(record, reason=reason, consumer_group=self._group_id)


class DeadLetterPublisher:
    """Sends a record that could not be handled to the dead-letter topic, unchanged, with why and where from."""

    def __init__(self, publisher: KafkaPublisher) -> None:
        self._publisher = publisher

    async def send(self, record: ConsumerRecord[bytes, bytes], *, reason: str, consumer_group: str) -> None:
        headers = [(k, v) for k, v in record.headers if not k.startswith("dlq_")]
        headers += [
            ("dlq_reason", reason.encode()),
            ("dlq_source_topic", record.topic.encode()),
            ("dlq_source_partition", str(record.partition).encode()),
            ("dlq_source_offset", str(record.offset).encode()),
            ("dlq_consumer_group", consumer_group.encode()),
            ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
        ]
        await self._publisher.publish(
            Topic.DEAD_LETTER.qualified(self._publisher.topic_prefix),
            Record(key=record.key or b"", value=record.value or b"", headers=headers),
        )


def route(routes: Mapping[type[Message], Callable[[Any, Envelope], Awaitable[None]]]) -> Handler:
    """One handler from a routing table by message type; types not in the table are skipped (another
    service's business on a shared topic)."""

    async def handle(message: Message, envelope: Envelope) -> None:
        handler = routes.get(type(message))
        if handler is not None:
            await handler(message, envelope)

    return handle
