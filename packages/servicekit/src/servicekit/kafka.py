"""Kafka adapters: a publisher with money-safe settings, topic creation, the dead-letter publisher, and the
handler types a consumer (servicekit.consumer) calls: a batch handler per poll, or `route` for one message at
a time."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, TopicAuthorizationFailedError

from contracts.base import Message
from contracts.codec import Envelope, Record
from contracts.topics import Topic
from servicekit.errors import ProducerReplaced
from servicekit.rejections import PermanentFailure as PermanentFailure  # where consumers have always found it
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


TOO_LARGE = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
)
"""The producer's or the broker's refusal of a record too large for it: the same record is refused for ever."""

REPLACED_STOP_S = 10.0
"""How long a replaced producer may take to stop (to flush what it still holds) before its fresh successor starts
anyway; the old one goes on stopping in the background."""

_PRODUCER_FAULTS = (
    kafka_errors.OutOfOrderSequenceNumber,
    kafka_errors.UnknownProducerId,
    kafka_errors.ProducerClosed,
)
"""Failures of a send that say nothing about the record, only about the producer that carried it: its sequence
numbers are past the broker's (after a refused batch), the broker forgot it, or it was replaced (closed) while the
send was under way."""


def producer_fault(exc: BaseException) -> bool:
    """Whether a send failed for its producer's state rather than for its record or its topic: the same record sent
    again through the publisher (whose producer is replaced meanwhile) goes through. A bare KafkaError is what
    aiokafka fails every send with once its sender task died (aio-libs/aiokafka#907)."""
    return isinstance(exc, _PRODUCER_FAULTS) or type(exc) is kafka_errors.KafkaError


class KafkaPublisher:
    """Publishes records and waits until the broker acknowledged every one of them.

    aiokafka's producer cannot recover from two states, and keeps failing every send in them for its whole life:
    after the broker refused a batch of an idempotent producer for good (a record above the topic's
    max.message.bytes, a topic it may not write), the sequence numbers given to that batch stay used, so every later
    batch to that partition is refused as out of order; and once its sender task died on an unexpected error
    (aio-libs/aiokafka#907), every send fails with that error. So the publisher watches every send it hands over:
    after a failed delivery of an idempotent producer, or once the sender task is found dead, the next send (or
    `probe`) first stops that producer (letting it deliver what it still holds) and starts a fresh one with the same
    settings, once for all concurrent callers. A send caught in the middle of that raises ProducerReplaced, which is
    retriable (servicekit.errors): sent again, it goes through the fresh producer."""

    def __init__(
        self,
        bootstrap: str,
        *,
        idempotence: bool,
        client_id: str,
        topic_prefix: str = "",
        tuning: KafkaTuning | None = None,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        """`security`: how it authenticates (servicekit.kafka_security.aiokafka_security); PLAINTEXT when None."""
        config = producer_config(bootstrap, idempotence=idempotence, client_id=client_id, tuning=tuning)
        self._config: dict[str, Any] = {**config, **(security or {})}
        self._producer = AIOKafkaProducer(**self._config)
        self._idempotent = idempotence
        self._spoilt: AIOKafkaProducer | None = None
        """The producer a failed delivery left unable to send to some partition: replaced before the next send."""
        self._replacing = asyncio.Lock()
        self._stopping: set[asyncio.Future[None]] = set()
        self._closed = False
        self.topic_prefix = topic_prefix
        self.replaced_total = 0
        """How many times a producer was replaced by a fresh one."""

    async def start(self) -> None:
        """Connect; a start that failed (the broker away) leaves a fresh client for the next attempt."""
        try:
            await self._producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = AIOKafkaProducer(**self._config)
            raise

    async def probe(self) -> None:
        """Ask the cluster for its metadata: raises when no broker answers, or when the producer can no longer send
        and a fresh one could not be started in its place (a dead sender still answers metadata requests)."""
        producer = await self._usable()
        await producer.client.fetch_all_metadata()

    async def stop(self) -> None:
        self._closed = True
        await self._producer.stop()
        if self._stopping:
            await asyncio.wait(self._stopping, timeout=REPLACED_STOP_S)

    async def publish(self, topic: str, record: Record) -> None:
        await self.publish_many([(topic, record)])

    async def publish_many(self, entries: Sequence[tuple[str, Record]]) -> None:
        """Send in order (per partition the broker keeps it) and wait for all acknowledgements. A failure of the
        producer rather than of the records raises ProducerReplaced (retriable)."""
        try:
            await asyncio.gather(*await self.send_each(entries))
        except kafka_errors.KafkaError as exc:
            if producer_fault(exc) and not self._closed:
                raise ProducerReplaced(f"the producer could not send ({exc!r}) and is replaced") from exc
            raise

    async def send_many(self, entries: Sequence[tuple[str, Record]]) -> "asyncio.Future[list[object]]":
        """Hand every record to the producer in order, without waiting for the broker: the future is done once
        the broker acknowledged all of them, or failed with the first refusal."""
        return asyncio.gather(*await self.send_each(entries))

    async def send_each(self, entries: Sequence[tuple[str, Record]]) -> "list[asyncio.Future[Any]]":
        """Hand every record to the producer in order, without waiting for the broker: one future per record, done
        once the broker acknowledged it or failed with its refusal. A record the producer itself refuses for its size
        (above max_request_size) gets a failed future of its own, and the others go all the same."""
        producer = await self._usable()
        watch = partial(self._delivered, producer) if self._idempotent else None
        futures: list[asyncio.Future[Any]] = []
        try:
            for topic, r in entries:
                try:
                    future = await producer.send(topic, value=r.value, key=r.key, headers=list(r.headers))
                except TOO_LARGE as exc:
                    future = asyncio.get_running_loop().create_future()
                    future.set_exception(exc)
                else:
                    if watch is not None:
                        future.add_done_callback(watch)
                futures.append(future)
        except kafka_errors.KafkaError as exc:
            if self._closed or not producer_fault(exc):
                raise
            await self._replace(producer)  # dead sender: every send fails with its error; replaced since closed
            raise ProducerReplaced(f"the producer could not send ({exc!r}) and was replaced") from exc
        return futures

    def _delivered(self, producer: AIOKafkaProducer, future: "asyncio.Future[Any]") -> None:
        # Any refusal of an idempotent producer's batch (they are retried until the broker says no for good) left
        # its sequence numbers past the broker's for that partition.
        if not future.cancelled() and future.exception() is not None and producer is self._producer:
            self._spoilt = producer

    def _needs_replacing(self, producer: AIOKafkaProducer) -> bool:
        if self._closed:
            return False
        if producer is self._spoilt:
            return True
        # aiokafka's background sender (aio-libs/aiokafka#907): once it ended, no send is ever delivered again.
        sender_task = getattr(getattr(producer, "_sender", None), "sender_task", None)
        return isinstance(sender_task, asyncio.Future) and sender_task.done()

    async def _usable(self) -> AIOKafkaProducer:
        producer = self._producer
        if self._needs_replacing(producer):
            await self._replace(producer)
        return self._producer

    async def _replace(self, old: AIOKafkaProducer) -> None:
        """Stop `old` (waiting a little for what it still delivers, so a partition's records stay in order) and put
        a fresh, started producer in its place, unless another caller did already. A fresh producer that cannot
        start (the broker away) raises, and the next send tries again."""
        async with self._replacing:
            if self._producer is not old or self._closed:
                return
            log.warning(
                "replacing the Kafka producer: it can no longer send to every partition (a refused batch or a"
                " dead sender task)"
            )
            stopping = asyncio.ensure_future(old.stop())
            done, _ = await asyncio.wait([stopping], timeout=REPLACED_STOP_S)
            if not done:
                log.warning(
                    "the replaced producer is still stopping after %.0fs; starting its successor", REPLACED_STOP_S
                )
                self._stopping.add(stopping)
                stopping.add_done_callback(self._stopping.discard)
            elif not stopping.cancelled() and stopping.exception() is not None:
                log.warning("the replaced producer did not stop cleanly: %r", stopping.exception())
            fresh = AIOKafkaProducer(**self._config)
            try:
                await fresh.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await fresh.stop()
                raise
            if self._closed:  # stopped while the fresh one started: nobody would ever stop it
                await fresh.stop()
                return
            self._producer = fresh
            self._spoilt = None
            self.replaced_total += 1


class TopicsRefused(RuntimeError):
    """Topics are missing and this client may not create them (no Create ACL): the deployment must."""


class TopicsMisconfigured(RuntimeError):
    """A topic exists with another partition count than the one its consumer relies on: retrying cannot help."""


DEAD_LETTER_RETENTION_MS = 90 * 24 * 3600 * 1000
"""How long the dead-letter topic keeps a letter: it is the only record of what was refused until a person replays
it, so 90 days (as docker-compose's topics one-shot creates it), not the broker's default week."""


def _topic_configs(name: str) -> dict[str, str]:
    # Names carry the deployment's prefix in front of the topic's own.
    return {"retention.ms": str(DEAD_LETTER_RETENTION_MS)} if name.endswith(Topic.DEAD_LETTER.value) else {}


async def ensure_topics(
    bootstrap: str,
    names: Sequence[str],
    partitions: int,
    *,
    security: Mapping[str, Any] | None = None,
    exact: Collection[str] = (),
    configs: Mapping[str, str] | None = None,
) -> None:
    """Create the topics that do not exist yet (replication 1 on a single broker), with `configs` besides the
    ones a topic of ours always has. A principal that may not create a missing one (on a broker with ACLs, where
    the deployment creates the topics) raises TopicsRefused naming it, rather than start and wait on a topic that
    never comes. A topic of `exact` that exists with another count than `partitions` raises TopicsMisconfigured
    naming it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="credited-admin", **(security or {}))
    await admin.start()
    try:
        # The listing comes from the broker's metadata cache, which learns a new topic a moment after the
        # controller made it: a topic it misses may still exist, and the create then answers so.
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            answer = await admin.create_topics(
                [
                    NewTopic(
                        name=n,
                        num_partitions=partitions,
                        replication_factor=1,
                        topic_configs={**_topic_configs(n), **(configs or {})},
                    )
                    for n in missing
                ]
            )
            existing |= _check_created(answer.topic_errors, partitions)
        await _check_partitions(admin, [n for n in names if n in exact and n in existing], partitions)
    finally:
        await admin.close()


async def _check_partitions(admin: AIOKafkaAdminClient, names: Sequence[str], partitions: int) -> None:
    if not names:
        return
    counts = await _partition_counts(admin, names)
    wrong = [f"{t} has {n} partitions" for t, n in sorted(counts.items()) if n != partitions]
    if wrong:
        raise TopicsMisconfigured(
            f"{', '.join(wrong)}, but CREDITED_TOPIC_PARTITIONS is {partitions}: these topics are joined partition"
            " by partition, so they must have exactly that many (partitions cannot be removed: set"
            " CREDITED_TOPIC_PARTITIONS to the topics' count, or recreate them)"
        )


METADATA_WAIT_S = 10.0
"""How long a topic the controller made may stay unknown to the broker's metadata cache."""


async def _partition_counts(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, int]:
    """Each topic's partition count, asked again while the broker's cache does not know a topic yet (it answers
    'unknown topic' with no partitions, which is not a count)."""
    deadline = time.monotonic() + METADATA_WAIT_S
    while True:
        described = await admin.describe_topics(list(names))
        unknown = sorted(d["topic"] for d in described if d["error_code"] != 0)
        if not unknown:
            return {d["topic"]: len(d["partitions"]) for d in described}
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"the broker does not describe topics {unknown} {METADATA_WAIT_S:.0f} s after they were made"
            )
        await asyncio.sleep(0.1)


def _check_created(topic_errors: Sequence[tuple[Any, ...]], partitions: int) -> set[str]:
    """Log what was created and return the topics the broker said already exist."""
    codes = {topic: code for topic, code, *_ in topic_errors}
    refused = sorted(t for t, code in codes.items() if code == TopicAuthorizationFailedError.errno)
    if refused:
        raise TopicsRefused(f"topics {refused} do not exist and this principal may not create them")
    created = sorted(t for t, code in codes.items() if code == 0)
    if created:
        log.info("created topics %s with %d partitions", created, partitions)
    return {t for t, code in codes.items() if code == TopicAlreadyExistsError.errno}


Delivery = tuple[Message, Envelope]
"""One decoded record: the contract message and its envelope."""

Handler = Callable[[Message, Envelope], Awaitable[None]]
"""Handles one message."""

BatchHandler = Callable[[Sequence[Delivery]], Awaitable[None]]
"""Handles the decoded messages of one poll, in partition order, inside one database transaction."""


DEAD_LETTER_MAX_BYTES = 1_000_000
"""The largest dead letter sent whole: a record near the broker's 1 MB limit (message.max.bytes, and the producer's
max_request_size) no longer fits once the dead-letter headers are added. A larger one is sent trimmed."""


class DeadLetterPublisher:
    """Sends a record that could not be handled to the dead-letter topic, unchanged, with why and where from.

    A letter the broker would refuse for its size (near the 1 MB limit, or above the topic's own limit) is sent
    trimmed instead (`trimmed`): without the record's value, with its size in `dlq_truncated`, and the source
    topic, partition and offset that find the original. Refused for ever, it would otherwise fail the consumer's
    poll at every start, and nothing after it would ever be read."""

    def __init__(self, publisher: KafkaPublisher) -> None:
        self._publisher = publisher

    async def send(self, record: ConsumerRecord[bytes, bytes], *, reason: str, consumer_group: str) -> None:
        await self.send_many([(record, reason)], consumer_group=consumer_group)

    async def send_many(
        self, failed: Sequence[tuple[ConsumerRecord[bytes, bytes], str]], *, consumer_group: str
    ) -> None:
        """Send every (record, reason) and wait until the broker acknowledged all of them."""
        now = datetime.now(UTC).isoformat().encode()
        topic = Topic.DEAD_LETTER.qualified(self._publisher.topic_prefix)
        letters = [fitted(_dead_letter(record, reason, consumer_group, now)) for record, reason in failed]
        # The topic's limit may be below ours: a letter refused for its size is sent again alone, and trimmed if
        # refused alone too. Every refusal replaces the publisher's producer before its next send (KafkaPublisher),
        # so what the refused batch left behind never fails the next attempt.
        for letter in await self._refused_together(topic, letters):
            try:
                await self._publisher.publish_many([(topic, letter)])
            except TOO_LARGE:
                where = {k: v.decode(errors="replace") for k, v in letter.headers if k.startswith("dlq_source")}
                log.warning("dead letter of %s refused for its size (%d bytes), sent trimmed", where, _size(letter))
                await self._publisher.publish_many([(topic, trimmed(letter))])

    async def _refused_together(self, topic: str, letters: list[Record]) -> list[Record]:
        """Send every letter at once; if the broker refused any for its size, the letters it did not take (the broker
        refuses a batch of one partition whole, and what followed it there is refused as out of order), in order.
        Any other failure is raised."""
        futures = await self._publisher.send_each([(topic, letter) for letter in letters])
        results = await asyncio.gather(*futures, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if any(isinstance(e, TOO_LARGE) for e in errors):
            return [letter for letter, r in zip(letters, results, strict=True) if isinstance(r, BaseException)]
        if errors:
            first = errors[0]
            if producer_fault(first):
                raise ProducerReplaced(f"the producer could not send dead letters ({first!r})") from first
            raise first
        return []


DEAD_LETTER_REASON_CHARS = 4000
"""The longest `dlq_reason` kept: a reason quoting what it refuses (an event_type, a header value) can be many times
the size of the record itself, and a letter must always fit once trimmed."""
TRIMMED_HEADER_BYTES = 4096
"""The most bytes a trimmed letter keeps of each of its dlq_* headers."""


def _size(record: Record) -> int:
    return len(record.key) + len(record.value) + sum(len(k) + len(v) for k, v in record.headers)


def fitted(letter: Record) -> Record:
    """The letter, or the letter trimmed if it is larger than DEAD_LETTER_MAX_BYTES."""
    return letter if _size(letter) <= DEAD_LETTER_MAX_BYTES else trimmed(letter)


def trimmed(letter: Record) -> Record:
    """A dead letter without the record's value (and its own headers, if they are what is large): its size goes in
    `dlq_truncated`, and its dlq_source_* headers say where the original is."""
    dlq = [(k, v[:TRIMMED_HEADER_BYTES]) for k, v in letter.headers if k.startswith("dlq_")]
    own = [(k, v) for k, v in letter.headers if not k.startswith("dlq_")]
    if sum(len(k) + len(v) for k, v in own) > 64 * 1024:
        own = []
    size = str(_size(letter)).encode()
    return Record(key=letter.key[:1024], value=b"", headers=[*own, *dlq, ("dlq_truncated", size)])


def _dead_letter(record: ConsumerRecord[bytes, bytes], reason: str, consumer_group: str, failed_at: bytes) -> Record:
    # Kafka allows a header without a value (aiokafka reads None): kept, as an empty one.
    headers = [(k, v or b"") for k, v in record.headers if not k.startswith("dlq_")]
    headers += [
        ("dlq_reason", reason[:DEAD_LETTER_REASON_CHARS].encode()),
        ("dlq_source_topic", record.topic.encode()),
        ("dlq_source_partition", str(record.partition).encode()),
        ("dlq_source_offset", str(record.offset).encode()),
        ("dlq_consumer_group", consumer_group.encode()),
        ("dlq_failed_at", failed_at),
    ]
    return Record(key=record.key or b"", value=record.value or b"", headers=headers)


def route(routes: Mapping[type[Message], Callable[[Any, Envelope], Awaitable[None]]]) -> BatchHandler:
    """A batch handler that passes each message of the poll, in order, to the handler its type has in the
    routing table; types not in the table are skipped (another service's business on a shared topic)."""

    async def handle(deliveries: Sequence[Delivery]) -> None:
        for message, envelope in deliveries:
            handler = routes.get(type(message))
            if handler is not None:
                await handler(message, envelope)

    return handle


OrderLocks = Callable[[Collection[str]], Awaitable[None]]
"""Takes the locks a handler takes on these orders, in the poll's transaction and in one fixed order (the service's
own, the one its batch handler takes them in), held until the transaction ends."""


class Only:
    """A batch handler that passes `handler` the poll's messages of `types`, in order, and nothing when there are
    none; the others are another service's business on a shared topic. The consumer loop reads `event_types` to
    skip those records undecoded, and `lock_orders` before it retries a failed poll one message at a time
    (servicekit.consumer)."""

    __slots__ = ("_handler", "_wanted", "event_types", "lock_orders")

    def __init__(
        self, types: Collection[type[Message]], handler: BatchHandler, *, lock_orders: OrderLocks | None = None
    ) -> None:
        self._wanted = frozenset(types)
        self._handler = handler
        self.event_types: frozenset[str] = frozenset(t.event_type for t in self._wanted)
        """The `event_type` header values of the messages the handler acts on."""
        self.lock_orders = lock_orders
        """How the handler locks the orders it handles, if it does: see `only`."""

    async def __call__(self, deliveries: Sequence[Delivery]) -> None:
        wanted = self._wanted
        mine = [delivery for delivery in deliveries if type(delivery[0]) in wanted]
        if mine:
            await self._handler(mine)


def only(types: Collection[type[Message]], handler: BatchHandler, *, lock_orders: OrderLocks | None = None) -> Only:
    """A batch handler that passes `handler` the poll's messages of `types`, in order, and nothing when there are
    none; the others are another service's business on a shared topic (and a consumer skips them undecoded).

    `lock_orders`, for a handler that locks the orders of the messages it is given for the rest of the transaction
    (in one fixed order, so two polls sharing orders wait for each other): the same locks, for a poll's orders at
    once. A consumer takes them before it retries a failed poll one message at a time in one transaction, where
    each message's locks would otherwise be taken in the poll's order, and two polls sharing orders in opposite
    order would deadlock."""
    return Only(types, handler, lock_orders=lock_orders)


def per_message(handler: Handler) -> BatchHandler:
    """A batch handler that calls `handler` once per message, in order."""

    async def handle(deliveries: Sequence[Delivery]) -> None:
        for message, envelope in deliveries:
            await handler(message, envelope)

    return handle
