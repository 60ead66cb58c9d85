"""KafkaConsumerLoop: a consumer group member that handles each poll as one batch.

Every record of a poll is decoded once, at the edge; what does not decode goes to the dead-letter topic. A handler
made by `only(...)` names the event types it acts on: a record whose `event_type` header names another known type
(another service's business on a shared topic) is skipped without being decoded, its offset committed with the
poll's; a record with no such header, or one naming no known type, is decoded as always (and dead-lettered). A
record of a type the handler acts on that arrives on a topic whose `carried` types do not include it (the contracts
catalogue's: a RedriveCredit written to ledger.commands) is dead-lettered undecoded as rejected, `wrong_topic`: a
topic's ACLs say who may write it, so a command is obeyed only from the topic that carries it. The
decoded messages of all the poll's partitions go to the service's batch handler in one database transaction,
and the offsets of all those partitions are committed once, after that transaction committed.

Whether a failure is the database or the broker being away is decided in one place, servicekit.errors.classify.
Transient failures (the database restarting, full or read-only, the broker away) roll the poll back and retry it
with backoff, without limit, never dead-lettering anything, and mark the dependency away in the service's
Readiness (so /healthz answers not ready) until the poll goes through; a dead letter or a commit that cannot
reach the broker waits the same way. A poll whose handler fails on anything else is handled again one message
at a time, each in a savepoint of one transaction (and, should even that transaction not commit, each in a
transaction of its own), so one bad message goes to the dead-letter topic with its reason and never holds up the
rest; a handler that locks its orders (`only(..., lock_orders=...)`) has all the poll's locked first, so that
transaction waits for another sharing its orders rather than deadlock with it. A commit refused because the group
rebalanced meanwhile is logged, not fatal: the partition's next owner resumes from the last commit, and every
effect is idempotent.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeAlias, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    IllegalStateError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

from contracts.codec import DecodeError, decode
from contracts.registry import MODELS
from servicekit.errors import Classified, Dependency, classify
from servicekit.fetching import follow_traffic
from servicekit.kafka import BatchHandler, DeadLetterPublisher, Delivery, Only, OrderLocks, PermanentFailure
from servicekit.logs import bound
from servicekit.metrics import ConsumerMetrics, DeadLetterKind
from servicekit.retrying import BackoffPolicy, Readiness, retrying, worth_retrying
from servicekit.settings import KafkaTuning

log = logging.getLogger(__name__)

Scope = Callable[[], AbstractAsyncContextManager[object]]
"""A context the handler runs in: the poll's database transaction, or one message's savepoint in it."""

REBALANCED = (
    CommitFailedError,
    IllegalStateError,
    RebalanceInProgressError,
    UnknownMemberIdError,
    IllegalGenerationError,
)
"""Commit failures that mean the partitions moved to another member while the poll was handled."""

WAIT = BackoffPolicy(initial_s=0.1, cap_s=5.0, unknown_attempts=1)
"""How a poll waits for a dependency: transient failures retried without limit, anything else raised at once
(the per-message fallback gives a message its `max_attempts`)."""

Record: TypeAlias = ConsumerRecord[bytes, bytes]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Decoded:
    record: Record
    delivery: Delivery


@dataclass(frozen=True, slots=True)
class _DeadLetter:
    record: Record
    kind: DeadLetterKind
    reason: str
    label: str | None = None
    """Why a rejected message was refused, as a bounded metric label (PermanentFailure.label)."""


def _bound_to(delivery: Delivery) -> contextlib.AbstractContextManager[None]:
    """The logs of handling one message carry its order id and its envelope's ids."""
    message, envelope = delivery
    return bound(order_id=message.order_id, event_id=envelope.event_id, correlation_id=envelope.correlation_id)


def _skipped_types(handler: BatchHandler) -> frozenset[bytes]:
    """The `event_type` header values of the known message types `handler` does not act on (none unless it says
    which it acts on)."""
    if not isinstance(handler, Only):
        return frozenset()
    return frozenset(name.encode() for name in MODELS if name not in handler.event_types)


def _order_locks(handler: BatchHandler) -> OrderLocks | None:
    """How `handler` locks a poll's orders, if it said (`only(..., lock_orders=...)`)."""
    return handler.lock_orders if isinstance(handler, Only) else None


WRONG_TOPIC = "wrong_topic"
"""The rejection label of a message that came on a topic that does not carry it."""


def _event_type(record: Record) -> bytes | None:
    """The record's `event_type` header as it came (the last one, as decoding reads it), or None."""
    found = None
    for name, value in record.headers or ():
        if name == "event_type":
            found = value
    return found


def _record_context(record: Record) -> dict[str, str]:
    """A record's ids for its log lines, read leniently (it may not decode): the key is the order id."""
    context = {"order_id": record.key.decode(errors="replace")} if record.key else {}
    for name, value in record.headers or ():
        if name in ("event_id", "correlation_id") and isinstance(value, bytes):
            context[name] = value.decode(errors="replace")
    return context


def _known(event_type: bytes) -> bool:
    return event_type.decode(errors="replace") in MODELS


def _misrouted(record: Record, event_type: bytes, allowed: frozenset[bytes]) -> _DeadLetter:
    name, carries = event_type.decode(), ", ".join(sorted(t.decode() for t in allowed))
    reason = f"rejected: {WRONG_TOPIC}: {record.topic} does not carry {name} (it carries {carries}), not decoded"
    return _DeadLetter(record, DeadLetterKind.REJECTED, reason, WRONG_TOPIC)


class KafkaConsumerLoop:
    """Consumes `topics` in consumer group `group_id`, one poll at a time (see the module docstring)."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        handler: BatchHandler,
        dead_letters: DeadLetterPublisher,
        max_attempts: int = 3,
        tuning: KafkaTuning | None = None,
        batch_scope: Scope | None = None,
        message_scope: Scope | None = None,
        metrics: ConsumerMetrics | None = None,
        security: Mapping[str, Any] | None = None,
        readiness: Readiness | None = None,
        backoff: BackoffPolicy = WAIT,
        carried: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        """`carried`: the message types (event_type) each of `topics` carries; a type the handler acts on that
        comes on a topic listed here without it is dead-lettered, `wrong_topic`. A topic not listed carries any."""
        tuning = tuning or KafkaTuning()
        self._idle_wait_ms = tuning.fetch_idle_wait_ms
        self._make_consumer = partial(
            AIOKafkaConsumer,
            *topics,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            client_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=tuning.fetch_max_records,
            # Apache Kafka answers a waiting fetch as soon as data arrives, so a poll never waits for a batch
            # to fill; Tansu waits the full time, so it stays short. Idle, fetches wait longer (`start`).
            fetch_max_wait_ms=tuning.fetch_max_wait_ms,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            **(security or {}),  # servicekit.kafka_security.aiokafka_security; PLAINTEXT when None
        )
        self._consumer = self._make_consumer()
        self.group_id = group_id
        self._handler = handler
        self._skipped = _skipped_types(handler)
        self._lock_orders = _order_locks(handler)
        self._carried = {topic: frozenset(name.encode() for name in names) for topic, names in (carried or {}).items()}
        self.skipped_total = 0
        """Records skipped undecoded: another service's message types on a shared topic."""
        self._dead_letters = dead_letters
        self._max_attempts = max_attempts
        self._readiness = readiness or Readiness()
        self._backoff = backoff
        self._batch_scope = batch_scope or contextlib.nullcontext
        self._message_scope = message_scope or contextlib.nullcontext
        self._metrics = metrics
        self._in_flight: dict[TopicPartition, int] = {}
        self.consumed_total = 0
        self.dead_lettered_total = 0
        self._finishing = False
        self._polling: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        """Join the group; a start that failed (the broker away) leaves a fresh client for the next attempt."""
        try:
            await self._consumer.start()
            follow_traffic(self._consumer, self._idle_wait_ms)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            self._consumer = self._make_consumer()
            raise

    async def stop(self) -> None:
        await self._consumer.stop()

    def finish(self) -> None:
        """Stop after the poll in hand: `run` handles it, commits its offsets and returns; waiting for a poll
        (or for the broker to come back for one), it returns at once."""
        self._finishing = True
        if self._polling is not None:
            self._polling.cancel()  # nothing in hand: what the fetch brings is read again by the next member

    async def run(self) -> None:
        """Consume until cancelled, or until `finish` is called: then return once the poll in hand is handled
        and committed, so the next member of the group starts after it."""
        while not self._finishing:
            polled = await self._poll()
            if polled:
                try:
                    await self.handle_poll(polled)
                except asyncio.CancelledError:
                    if self._finishing:
                        log.warning(
                            "consumer %s: stopping cut its poll in hand short (%d records, not committed): the "
                            "group's next member reads them again",
                            self.group_id,
                            sum(len(part) for part in polled.values()),
                        )
                    raise

    async def _poll(self) -> Mapping[TopicPartition, Sequence[Record]] | None:
        """The next poll, or None once `finish` cut the wait for it short."""
        this = asyncio.current_task()
        self._polling = this
        try:
            polled = await self._waiting("a poll", Dependency.BROKER, partial(self._consumer.getmany, timeout_ms=500))
            # `finish` came as the poll returned: not in hand yet, so left (uncommitted) for the next member
            return None if self._finishing else polled
        except asyncio.CancelledError:
            if self._finishing and this is not None and this.uncancel() == 0:
                return None  # cancelled by `finish` alone: stop as asked
            raise
        finally:
            self._polling = None

    async def handle_poll(self, polled: Mapping[TopicPartition, Sequence[Record]]) -> None:
        """Apply one poll's records, dead-letter what failed, then commit every partition's offset at once."""
        started = time.perf_counter()
        # Until the poll is committed, a partition's lag counts from the poll's first record.
        self._in_flight.update((tp, records[0].offset) for tp, records in polled.items() if records)
        records = [record for part in polled.values() for record in part]
        with bound(consumer=self.group_id, poll_records=len(records)):  # one message's lines: its ids (`_one`)
            decoded, failed = self._decode(records)
            fell_back = False
            if decoded:
                dead, fell_back = await self._apply(decoded)
                failed += dead
            if failed:
                await self._send_dead_letters(failed)
            await self._commit({tp: part[-1].offset + 1 for tp, part in polled.items() if part})
        for tp in polled:
            self._in_flight.pop(tp, None)
        if self._metrics is not None:
            for tp, part in polled.items():
                self._metrics.consumed(tp.topic, len(part))
            self._metrics.polled(len(records), time.perf_counter() - started, fell_back=fell_back)
        # Last, so whoever waits on it sees the poll committed and its metrics recorded.
        self.consumed_total += len(records)

    def _decode(self, records: Sequence[Record]) -> tuple[list[_Decoded], list[_DeadLetter]]:
        decoded: list[_Decoded] = []
        failed: list[_DeadLetter] = []
        skipped, carried = self._skipped, self._carried
        for record in records:
            if skipped or carried:
                event_type = _event_type(record)
                if event_type in skipped:
                    self.skipped_total += 1
                    continue  # a known type the handler does not act on: nothing to decode, nothing to do
                allowed = carried.get(record.topic)
                if allowed is not None and event_type is not None and event_type not in allowed and _known(event_type):
                    failed.append(_misrouted(record, event_type, allowed))
                    continue
            try:
                decoded.append(_Decoded(record, decode(record.value, record.headers)))
            except DecodeError as exc:
                failed.append(_DeadLetter(record, DeadLetterKind.UNDECODABLE, f"undecodable: {exc.reason}"))
        return decoded, failed

    async def _apply(self, batch: list[_Decoded]) -> tuple[list[_DeadLetter], bool]:
        """The messages set-based in one transaction; if that fails for good, one at a time with savepoints; if
        that transaction cannot commit either, each in a transaction of its own. (dead letters, fell back)."""
        deliveries = [item.delivery for item in batch]
        try:
            return await self._in_transaction(partial(self._set_based, deliveries), len(batch)), False
        except Exception:
            log.warning("a poll of %d messages failed; handling it one message at a time", len(batch), exc_info=True)
        try:
            return await self._in_transaction(partial(self._one_at_a_time, batch), len(batch)), True
        except Exception:
            log.exception("one message at a time, the poll's transaction failed too: one transaction each")
        failed: list[_DeadLetter] = []
        for item in batch:
            try:
                failed += await self._in_transaction(partial(self._one_at_a_time, [item]), 1)
            except Exception as exc:
                with _bound_to(item.delivery):
                    log.exception("the transaction of order %s alone failed", item.delivery[0].order_id)
                failed.append(_DeadLetter(item.record, DeadLetterKind.HANDLER_FAILED, f"not committed: {exc!r}"[:500]))
        return failed, True

    async def _in_transaction(self, step: Callable[[], Awaitable[list[_DeadLetter]]], size: int) -> list[_DeadLetter]:
        """`step` in the batch scope until it commits: transient failures roll it back and retry it with backoff;
        any other failure is raised."""

        async def attempt() -> list[_DeadLetter]:
            async with self._batch_scope():
                return await step()

        return await self._waiting(f"a batch of {size} messages", Dependency.DATABASE, attempt)

    async def _waiting(self, what: str, dependency: Dependency, call: Callable[[], Awaitable[T]]) -> T:
        """`await call()`, retried with backoff for as long as it fails transiently (servicekit.errors), the
        dependency marked away in the service's readiness meanwhile; any other failure is raised at once.

        The first attempt is a bare call: a poll makes three of these, and building and entering a tenacity
        retrier costs more than the rest of a small poll's bookkeeping (25-50 µs each here). Only a failure worth
        retrying builds the retrier, which takes that failure as its first attempt's."""
        source = f"consumer {self.group_id} {id(self):x}"
        try:
            result: T = await self._unless_stopping(call)
        except Exception as exc:
            if not worth_retrying(exc, self._backoff, dependency, 1):
                raise
            result = await self._retrying(what, dependency, call, source, exc)
        self._readiness.back_all(source)
        return result

    async def _retrying(
        self, what: str, dependency: Dependency, call: Callable[[], Awaitable[T]], source: str, first: Exception
    ) -> T:
        """`call` under a tenacity retrier by the consumer's backoff policy, its first attempt the one that failed
        with `first`: the dependency is marked away and the wait logged before the next attempt, as always."""

        def note(verdict: Classified, delay: float) -> None:
            log.warning("%s is away (%s) for %s, retrying in %.1fs", verdict.dependency, verdict.reason, what, delay)

        failed = [first]

        async def attempt() -> T:
            if failed:
                raise failed.pop()
            return await self._unless_stopping(call)

        readiness = self._readiness
        retrier = retrying(self._backoff, dependency=dependency, readiness=readiness, on_retry=note, source=source)
        result: T = await retrier(attempt)
        return result

    @staticmethod
    async def _unless_stopping(call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except Exception as exc:
            # Cancelled inside the transaction (shutdown) with the connection gone, the transaction's exit raises
            # a connection error in place of the CancelledError: stop, never retry then.
            task = asyncio.current_task()
            # (Not `from exc`: the connection error would make the cancellation look transient to the retrier.)
            if task is not None and task.cancelling():
                log.info("stopping while the poll's transaction failed: %r", exc)
                raise asyncio.CancelledError from None
            raise

    async def _set_based(self, deliveries: list[Delivery]) -> list[_DeadLetter]:
        await self._handler(deliveries)
        return []

    async def _one_at_a_time(self, batch: list[_Decoded]) -> list[_DeadLetter]:
        # Each message's handler locks its order to the transaction's end: one at a time, in the poll's order, and
        # two polls sharing orders in opposite order (two instances, or two consumers of one order's events) would
        # deadlock. The poll's orders are locked first, in the handler's own fixed order; its locks then hold.
        orders = {item.delivery[0].order_id for item in batch}
        if self._lock_orders is not None and len(orders) > 1:
            await self._lock_orders(orders)
        failed = [dead for item in batch if (dead := await self._one(item)) is not None]
        return failed

    async def _one(self, item: _Decoded) -> _DeadLetter | None:
        """One message in its own savepoint, retried `max_attempts` times unless it is rejected for good."""
        with _bound_to(item.delivery):
            return await self._attempts(item)

    async def _attempts(self, item: _Decoded) -> _DeadLetter | None:
        message, envelope = item.delivery
        for attempt in range(1, self._max_attempts + 1):
            try:
                async with self._message_scope():
                    await self._handler([item.delivery])
                return None
            except PermanentFailure as exc:
                return _DeadLetter(item.record, DeadLetterKind.REJECTED, f"rejected: {exc}", exc.label)
            except Exception as exc:
                if classify(exc, dependency=Dependency.DATABASE).transient:
                    raise  # the poll's transaction is rolled back and waits; the message is never blamed
                log.exception(
                    "handler failed on order %s event %s (attempt %d)", message.order_id, envelope.event_id, attempt
                )
                if attempt >= self._max_attempts:
                    reason = f"handler failed {attempt} times: {exc!r}"[:500]
                    return _DeadLetter(item.record, DeadLetterKind.HANDLER_FAILED, reason)
                await asyncio.sleep(0.05 * attempt)
        raise AssertionError("unreachable: the last attempt returns")

    async def _send_dead_letters(self, failed: list[_DeadLetter]) -> None:
        for dead in failed:
            r = dead.record
            log.error(
                "dead-lettering %s[%d]@%d key=%r: %s",
                r.topic,
                r.partition,
                r.offset,
                r.key,
                dead.reason,
                extra=_record_context(r),
            )
        entries = [(dead.record, dead.reason) for dead in failed]
        send = partial(self._dead_letters.send_many, entries, consumer_group=self.group_id)
        await self._waiting(f"{len(failed)} dead letters", Dependency.BROKER, send)
        self.dead_lettered_total += len(failed)
        if self._metrics is not None:
            for dead in failed:
                self._metrics.dead_lettered(dead.kind, dead.label)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the offsets of the partitions this member still holds; a partition revoked while the poll was
        handled is left to its next owner, which resumes from the last commit (the repeat has no effect)."""
        await self._waiting("a commit", Dependency.BROKER, partial(self._commit_owned, offsets))

    async def _commit_owned(self, offsets: dict[TopicPartition, int]) -> None:
        assigned = self._consumer.assignment()
        owned = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if len(owned) < len(offsets):
            log.warning("partitions %s were revoked during the poll; not committed", sorted(offsets.keys() - owned))
        if not owned:
            return
        try:
            await self._consumer.commit(owned)
        except REBALANCED as exc:
            log.warning(
                "commit of %s failed after a rebalance, the next owner resumes from the last commit: %r", owned, exc
            )

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
