"""Whether a dead letter is what it claims to be, before a replay sends it where its headers say.

Every service's principal may write credited.deadletter (servicekit.kafka_access), so a dead letter's `dlq_*`
headers are only a claim, and a replay writes with an operator's wider rights. So a letter is replayed only
when both hold:

- its consumer group reads its source topic by the catalogue (contracts.catalog, which the ACLs derive from):
  a letter from `notifier.order-status` naming payments.events is refused;
- it is a true copy of a record on that topic: the record at its `dlq_source_partition`/`dlq_source_offset` has
  the same key, value and headers (`dlq_*` headers aside: a replayed record carries `dlq_replayed_from`, which
  the consumer that dead-letters it again drops). A letter that states no offset (the ledger dead-letters a
  parked RetryCredit from its outbox, with the record it kept) is looked for on the topic from shortly before
  its `occurred_at`.

An original the broker has deleted by retention cannot be checked: such a letter is left unverified, and an
operator may replay it anyway (`credited dlq replay --trust-unverified`). Anything else is refused.
"""

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from contracts.catalog import CATALOG
from credited.deadletters import READ_TIMEOUT_S, DeadLetter, committed_reader, partitions_of
from servicekit.settings import ServiceSettings

_COORDINATE = re.compile(r"[0-9]{1,18}")
EPOCH = datetime.fromtimestamp(0, UTC)
SEARCH_FROM = timedelta(minutes=10)
"""How long before a letter's `occurred_at` its original is looked for when it states no offset: the record was
written after the event occurred, give or take the clocks of the hosts."""


@dataclass
class Vetting:
    """Dead letters sorted by whether they may be replayed, each refusal with why."""

    genuine: list[DeadLetter] = field(default_factory=list)
    refused: list[tuple[DeadLetter, str]] = field(default_factory=list)
    unverified: list[tuple[DeadLetter, str]] = field(default_factory=list)
    """Whose original the broker no longer has (retention): neither confirmed nor refuted."""


def readers(prefix: str) -> frozenset[tuple[str, str]]:
    """Every (topic, consumer group) in which a credited service reads that topic, with the topic prefix."""
    return frozenset(
        (spec.topic.qualified(prefix), f"{prefix}{reader.group}") for spec in CATALOG for reader in spec.readers
    )


def _kept(headers: Iterable[tuple[str, bytes | None]]) -> list[tuple[str, bytes]]:
    """The headers a letter copied from its original, as the consumer copies them: a header without a value (Kafka
    allows one; aiokafka reads it None) as empty bytes."""
    return [(k, bytes(v or b"")) for k, v in headers if not k.startswith("dlq_")]


def same_record(letter: DeadLetter, record: ConsumerRecord[bytes, bytes]) -> bool:
    return (
        (record.key or b"") == letter.key
        and (record.value or b"") == letter.value
        and _kept(record.headers) == _kept(letter.headers)
    )


async def vet(settings: ServiceSettings, letters: Iterable[DeadLetter]) -> Vetting:
    """Sort `letters` (each with a source topic) by whether they may be replayed (see the module docstring)."""
    vetting = Vetting()
    pairs = readers(settings.topic_prefix)
    to_read = []
    for letter in letters:
        group = letter.header("dlq_consumer_group")
        if (letter.source_topic, group) not in pairs:
            why = f"consumer group {group!r} does not read {letter.source_topic} (contracts.catalog)"
            vetting.refused.append((letter, why))
        else:
            to_read.append(letter)
    if to_read:
        consumer = committed_reader(settings)
        await consumer.start()
        try:
            known = {t: await partitions_of(settings, t) for t in {d.source_topic for d in to_read} if t is not None}
            for letter in to_read:
                topic = letter.source_topic
                assert topic is not None
                try:
                    verdict = await _check(consumer, letter, topic, known[topic])
                except TimeoutError:
                    verdict = False, f"its original could not be read from {topic} within {READ_TIMEOUT_S:g} s"
                _sort(vetting, letter, verdict)
        finally:
            await consumer.stop()
    return vetting


Verdict = tuple[bool | None, str]
"""True: a true copy; False: refused, with why; None: cannot tell (the original deleted), with why."""


def _sort(vetting: Vetting, letter: DeadLetter, verdict: Verdict) -> None:
    genuine, why = verdict
    if genuine:
        vetting.genuine.append(letter)
    elif genuine is None:
        vetting.unverified.append((letter, why))
    else:
        vetting.refused.append((letter, why))


async def _check(consumer: AIOKafkaConsumer, letter: DeadLetter, topic: str, partitions: list[int]) -> Verdict:
    if not partitions:
        return False, f"{topic} does not exist"
    partition, offset = letter.header("dlq_source_partition"), letter.header("dlq_source_offset")
    if partition is None and offset is None:
        return await _search(consumer, letter, [TopicPartition(topic, p) for p in partitions])
    if partition is None or offset is None or not (_COORDINATE.fullmatch(partition) and _COORDINATE.fullmatch(offset)):
        return False, f"source partition {partition!r} and offset {offset!r} are not a record's coordinates"
    if int(partition) not in partitions:
        return False, f"{topic} has no partition {partition}"
    truncated = letter.header("dlq_truncated")
    if truncated is not None:  # servicekit.kafka.trimmed: too large to dead-letter whole
        where = f"{topic}[{partition}]@{offset}"
        return False, f"it was dead-lettered without its {truncated}-byte value, too large for the topic: read {where}"
    return await _at(consumer, letter, TopicPartition(topic, int(partition)), int(offset))


async def _at(consumer: AIOKafkaConsumer, letter: DeadLetter, tp: TopicPartition, offset: int) -> Verdict:
    """The record at `offset` of `tp` against the letter."""
    where = f"{tp.topic}[{tp.partition}]@{offset}"
    start, end = (await consumer.beginning_offsets([tp]))[tp], (await consumer.end_offsets([tp]))[tp]
    if offset < start:
        return None, f"its original {where} was deleted (retention: the partition starts at {start})"
    if offset >= end:
        return False, f"no record at {where} (the partition ends at {end})"
    consumer.assign([tp])
    consumer.seek(tp, offset)
    async with asyncio.timeout(READ_TIMEOUT_S):
        while await consumer.position(tp) < end:
            batch = (await consumer.getmany(tp, timeout_ms=200)).get(tp, [])
            if batch and batch[0].offset != offset:
                return False, f"no record at {where} (a transaction's marker or an aborted record)"
            if batch:
                if not same_record(letter, batch[0]):
                    return False, f"it is not a copy of the record at {where} (key, value or headers differ)"
                return True, ""
    return False, f"no record at {where}"


async def _search(consumer: AIOKafkaConsumer, letter: DeadLetter, tps: list[TopicPartition]) -> Verdict:
    """A letter that states no offset: an identical record on the topic since shortly before it occurred."""
    occurred = letter.header("occurred_at")
    try:
        since = max(datetime.fromisoformat(occurred or "").astimezone(UTC) - SEARCH_FROM, EPOCH)
    except (ValueError, OverflowError):
        return False, f"it states no source offset and no occurred_at to look for its original in {tps[0].topic}"
    consumer.assign(tps)
    found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
    starts, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
    for tp in tps:
        at = found.get(tp)
        if at is None:
            continue
        consumer.seek(tp, at.offset)
        async with asyncio.timeout(READ_TIMEOUT_S):
            while await consumer.position(tp) < ends[tp]:
                batch = (await consumer.getmany(tp, timeout_ms=200)).get(tp, [])
                if any(same_record(letter, record) for record in batch):
                    return True, ""
    window = f"{tps[0].topic} since {since.isoformat()}"
    # Retention deletes a partition's oldest records first: the original may be gone if nothing older than the
    # window is left (the first record kept is in it, or none is kept).
    first_in_window = {tp: at.offset if (at := found.get(tp)) is not None else ends[tp] for tp in tps}
    if any(starts[tp] > 0 and first_in_window[tp] == starts[tp] for tp in tps):
        return None, f"no copy of it in {window}, where records were deleted (retention)"
    return False, f"no copy of it in {window}"
