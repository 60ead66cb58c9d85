"""Dead letters read back from credited.deadletter, and replayed to the topic they came from, once each.

A dead letter is the original record (key, value, headers) plus `dlq_*` headers saying why and where from
(servicekit.kafka.DeadLetterPublisher). A replay publishes the record to its source topic with its original
key and headers, the original event id among them (a consumer that has applied it drops it), plus
`dlq_replayed_from=<dead-letter topic>[<partition>]@<offset>`, and records the replay in
`credited.deadletter.replays` (compacted, one partition, keyed by the dead letter's coordinates). Every
consumer group of that topic reads the replay, not only the one that gave up on it: the others have applied
the event already and drop it by its event id (or, the reconciler, as a repeat that changes nothing).

Every service may write the dead-letter topic, so a letter's headers are a claim, not a fact: a replay sends
only a true copy of a record that its consumer group read from that topic (credited.provenance), and refuses,
with why, any other (a forged PaymentSucceeded naming payments.events), so no service can launder a record into
a topic it may not write through an operator's replay.

Once per dead letter, even with two operators at once: on Apache Kafka every replay run uses the same
transactional id, so a run that starts fences the one before it; it reads the replays log only then (every
replay committed before is in it, one half done was aborted) and publishes each record together with its
replay entry in one transaction. The embedded Tansu broker has no transactions: there a replay is sent,
then recorded, and two runs at once could both send one (consumers drop the repeat by its event id).

A run that loses its producer to anything but a fence (a broker that went away, a coordinator that moved)
starts over with a new one, a few times: the new producer fences nothing of its own that committed, and the
replays log read after it starts says what went out already.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    InvalidTxnState,
    KafkaError,
    ProducerFenced,
)
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from contracts.topics import Topic
from servicekit.errors import raised_from
from servicekit.kafka import ensure_topics, producer_config
from servicekit.kafka_security import aiokafka_security
from servicekit.retrying import BackoffPolicy
from servicekit.settings import ServiceSettings

if TYPE_CHECKING:
    from credited.provenance import Vetting

log = logging.getLogger(__name__)

REPLAY_MARKER = "dlq_replayed_from"
READ_TIMEOUT_S = 60.0
RUN_ATTEMPTS = 3
"""How many producers one replay run starts before it gives up on a broker error that is not a fence."""
FENCES = (ProducerFenced, InvalidProducerEpoch, InvalidTxnState, InvalidProducerIdMapping)
"""What the broker answers a producer whose transactional id another run has taken: its epoch is stale
(aiokafka says ProducerFenced where it expects it), its open transaction was aborted under it, or its producer
id no longer maps to the id."""


class ReplayInterrupted(RuntimeError):
    """Another replay run started and fenced this one: what this one committed stays, the rest is the other's."""


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    @classmethod
    def of(cls, record: ConsumerRecord[bytes, bytes]) -> "DeadLetter":
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.key or b"",
            record.value or b"",
            tuple(record.headers),
            record.timestamp,
        )

    @property
    def id(self) -> str:
        """How an operator names it: `<partition>@<offset>` in the dead-letter topic."""
        return f"{self.partition}@{self.offset}"

    @property
    def coordinates(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k == name]
        return found[-1].decode(errors="replace") if found else None

    @property
    def source_topic(self) -> str | None:
        """The topic a consumer read it from; None for what no consumer read (a notification never delivered)."""
        return self.header("dlq_source_topic")

    @property
    def origin(self) -> str | None:
        """Where it came from, as `list` shows it and `--topic` picks it: the topic a consumer read it from, else
        what wrote it (`dlq_source`: the notifier's deliveries given up, an outbox row the broker refused)."""
        return self.source_topic or self.header("dlq_source")

    @property
    def failed_at(self) -> datetime:
        """When it failed, as its `dlq_failed_at` says; the record's own time when that is missing or not a time,
        and UTC for one without a zone: any service may write the topic, and one letter's header must never stop
        the listing and replay of all the others (they are sorted and filtered by this)."""
        stamp = self.header("dlq_failed_at")
        try:
            said = datetime.fromisoformat(stamp) if stamp else None
        except ValueError:
            said = None
        if said is None:
            return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)
        return said if said.tzinfo is not None else said.replace(tzinfo=UTC)

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.headers if not k.startswith("dlq_")]


@dataclass(frozen=True)
class Filters:
    """Which dead letters: by id, source topic, consumer group (each with or without the topic prefix), a
    piece of the reason (any case), and when they failed (since <= failed_at < until)."""

    ids: frozenset[str] = frozenset()
    topic: str | None = None
    group: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __call__(self, letter: DeadLetter, prefix: str) -> bool:
        def named(value: str | None, wanted: str | None) -> bool:
            return wanted is None or value in (wanted, f"{prefix}{wanted}")

        reason = (letter.header("dlq_reason") or "").lower()
        return (
            (not self.ids or letter.id in self.ids)
            and named(letter.origin, self.topic)
            and named(letter.header("dlq_consumer_group"), self.group)
            and (self.reason is None or self.reason.lower() in reason)
            and (self.since is None or letter.failed_at >= self.since)
            and (self.until is None or letter.failed_at < self.until)
        )


@dataclass(frozen=True)
class Replay:
    """A replay as recorded: which dead letter, where it went, which event, who asked and when."""

    dead_letter: str
    topic: str
    event_id: str | None
    by: str
    at: str

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


@dataclass
class Outcome:
    """What a replay run did with each dead letter it was given."""

    replayed: list[DeadLetter] = field(default_factory=list)
    already: list[tuple[DeadLetter, Replay]] = field(default_factory=list)
    not_replayable: list[DeadLetter] = field(default_factory=list)
    refused: list[tuple[DeadLetter, str]] = field(default_factory=list)
    """Not replayed: not what it claims to be (credited.provenance), with why."""
    unverified: list[tuple[DeadLetter, str]] = field(default_factory=list)
    """Whose original the broker no longer has, with why: not replayed, or, trusted, replayed (in `replayed` too)."""


def dead_letter_topic(settings: ServiceSettings) -> str:
    return Topic.DEAD_LETTER.qualified(settings.topic_prefix)


def replays_topic(settings: ServiceSettings) -> str:
    return f"{dead_letter_topic(settings)}.replays"


@contextlib.asynccontextmanager
async def _admin(settings: ServiceSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id="credited-dlq", **aiokafka_security(settings)
    )
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def partitions_of(settings: ServiceSettings, topic: str) -> list[int]:
    """The topic's partitions; none if it does not exist (a consumer without a group knows no metadata of
    topics it has not been assigned, so ask the admin API)."""
    async with _admin(settings) as admin:
        if topic not in await admin.list_topics():
            return []
        (described,) = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in described["partitions"])


def committed_reader(settings: ServiceSettings) -> AIOKafkaConsumer:
    """A consumer outside any group that reads committed records only (not started): the tools' reader."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=50,
        **aiokafka_security(settings),
    )


async def read_topic(settings: ServiceSettings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every committed record of `topic`, from its start to its end at the time of the call."""
    partitions = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
    if not partitions:
        return []
    consumer = committed_reader(settings)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(READ_TIMEOUT_S):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records += batch
        return records
    finally:
        await consumer.stop()


async def dead_letters(settings: ServiceSettings, chosen: Filters = Filters()) -> list[DeadLetter]:
    """The chosen letters, oldest first, and those that failed at the same time in the order they were written: a
    consumer dead-letters a whole poll with one `dlq_failed_at`, and one order's letters (one key, so one partition)
    go back in their order (by offset as a number: as text, an id 0@10 sorts before 0@9)."""
    letters = [DeadLetter.of(r) for r in await read_topic(settings, dead_letter_topic(settings))]
    chosen_ones = (d for d in letters if chosen(d, settings.topic_prefix))
    return sorted(chosen_ones, key=lambda d: (d.failed_at, d.partition, d.offset))


async def replays(settings: ServiceSettings) -> dict[str, Replay]:
    """Dead letter coordinates -> its replay, from the replays log (the last entry of a key wins)."""
    return {
        r.key.decode(): Replay(**json.loads(r.value))
        for r in await read_topic(settings, replays_topic(settings))
        if r.key is not None and r.value is not None
    }


async def _ensure_replays_topic(settings: ServiceSettings) -> None:
    """The replays log exists before the first replay is sent: made here on a broker that lets this principal
    (TopicsRefused, said as a sentence by `credited dlq`, where it may not and the deployment has not made it)."""
    await ensure_topics(
        settings.kafka_bootstrap,
        [replays_topic(settings)],
        1,
        security=aiokafka_security(settings),
        configs={"cleanup.policy": "compact"},
    )


def _producer(settings: ServiceSettings) -> AIOKafkaProducer:
    config = producer_config(
        settings.kafka_bootstrap,
        idempotence=settings.idempotent_producer,
        client_id="credited-dlq",
        tuning=settings.kafka_tuning,
    )
    if settings.idempotent_producer:  # Apache Kafka: transactions, one replay run at a time
        config["transactional_id"] = f"{settings.topic_prefix}credited-dlq-replay"
    return AIOKafkaProducer(**config, **aiokafka_security(settings))


def _sort(letters: Iterable[DeadLetter], done: dict[str, Replay]) -> Outcome:
    outcome = Outcome()
    for letter in letters:
        if letter.source_topic is None:
            outcome.not_replayable.append(letter)
        elif letter.coordinates in done:
            outcome.already.append((letter, done[letter.coordinates]))
        else:
            outcome.replayed.append(letter)
    return outcome


async def replay(
    settings: ServiceSettings,
    letters: Iterable[DeadLetter],
    *,
    by: str,
    dry_run: bool = False,
    trust_unverified: bool = False,
    go_ahead: Callable[[Outcome], bool] | None = None,
) -> Outcome:
    """Replay each of `letters` not replayed before that is a true copy of a record its consumer group read
    (credited.provenance; with `trust_unverified`, also those whose original is deleted); the others are refused.
    With `dry_run`, only say what would be (without starting a producer, so a dry run never fences a replay run
    going on); `go_ahead` is shown what would be before anything is sent, and may stop it there."""
    from credited.provenance import vet  # it reads dead letters as this module defines them

    letters = list(letters)
    done = await replays(settings)
    vetting = await vet(settings, [d for d in letters if d.source_topic is not None and d.coordinates not in done])
    suspect = {d.coordinates for d, _ in vetting.refused}
    if not trust_unverified:
        suspect |= {d.coordinates for d, _ in vetting.unverified}
    letters = [d for d in letters if d.coordinates not in suspect]
    plan = _vetted(_sort(letters, done), vetting)
    if dry_run or (go_ahead is not None and not go_ahead(plan)):
        return plan
    await _ensure_replays_topic(settings)
    sent: list[DeadLetter] = []
    outcome = await again_unless_fenced(lambda: _run(settings, letters, by, sent), sent)
    return _vetted(with_earlier_attempts(outcome, sent), vetting)


def _vetted(outcome: Outcome, vetting: "Vetting") -> Outcome:
    outcome.refused, outcome.unverified = vetting.refused, vetting.unverified
    return outcome


def with_earlier_attempts(outcome: Outcome, sent: Sequence[DeadLetter]) -> Outcome:
    """The last attempt's outcome, with what earlier producers of the same run committed (`sent`) counted as
    replayed by the run rather than as replayed before it (the last attempt found them in the replays log)."""
    mine = {letter.coordinates for letter in sent}
    return Outcome(
        replayed=[*(d for d, _ in outcome.already if d.coordinates in mine), *outcome.replayed],
        already=[(d, r) for d, r in outcome.already if d.coordinates not in mine],
        not_replayable=outcome.not_replayable,
    )


async def again_unless_fenced(run: Callable[[], Awaitable[Outcome]], sent: list[DeadLetter]) -> Outcome:
    """`run` with a new producer each time it fails on a broker error, up to RUN_ATTEMPTS; a fence (another
    run started after it) ends it at once with ReplayInterrupted, since what is left is the other run's."""

    def lost_producer(exc: BaseException) -> bool:
        return isinstance(exc, KafkaError) and not fenced(exc)

    def starting_over(state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        log.warning("a replay run lost its producer (%r) after %d replays: starting over", failure, len(sent))

    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(lost_producer),
            stop=stop_after_attempt(RUN_ATTEMPTS),
            wait=BackoffPolicy(initial_s=0.2, cap_s=2.0).wait(),
            before_sleep=starting_over,
            reraise=True,
        ):
            with attempt:
                return await run()
    except KafkaError as exc:
        if fenced(exc):
            raise ReplayInterrupted(f"another replay run started after this one had replayed {len(sent)}") from exc
        raise
    raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover


def fenced(exc: BaseException) -> bool:
    """Whether `exc` comes from a fence. aiokafka raises one as ProducerFenced where it expects it, and
    otherwise wraps the broker's answer in a KafkaError ("Unexpected error during batch delivery")."""
    return any(isinstance(e, FENCES) for e in raised_from(exc))


async def _run(settings: ServiceSettings, letters: list[DeadLetter], by: str, sent: list[DeadLetter]) -> Outcome:
    """One producer's go at `letters`: it starts (with a transactional id, fencing any run still going), then
    reads the replays log, then replays what is not in it; each letter it commits goes on `sent`."""
    producer = _producer(settings)
    try:
        await producer.start()
        outcome = _sort(letters, await replays(settings))
        for letter in outcome.replayed:
            await _send(settings, producer, letter, by)
            sent.append(letter)
        return outcome
    finally:
        await producer.stop()


async def _send(settings: ServiceSettings, producer: AIOKafkaProducer, letter: DeadLetter, by: str) -> None:
    assert letter.source_topic is not None
    headers = [*letter.original_headers, (REPLAY_MARKER, letter.coordinates.encode())]
    # Decoded leniently: a letter dead-lettered because its event_id is not UTF-8 stopped the replay of every other.
    event_id = next((v.decode(errors="replace") for k, v in letter.original_headers if k == "event_id"), None)
    entry = Replay(letter.coordinates, letter.source_topic, event_id, by, datetime.now(UTC).isoformat())
    record = (letter.source_topic, letter.value, letter.key, headers)
    log_entry = (replays_topic(settings), entry.to_json(), letter.coordinates.encode(), None)
    async with producer.transaction() if settings.idempotent_producer else contextlib.nullcontext():
        for topic, value, key, with_headers in (record, log_entry):
            await (await producer.send(topic, value, key=key, headers=with_headers))
