"""The worker's rounds: a batch of records from the agent, or one tick of timers, applied in memory and
then made durable, one round at a time (each starts from the states the last one left).

A round, and why its order is safe against a SIGKILL between any two lines:
1. Every record is decoded once and applied (handlers.py): announcements are queued, new states staged.
2. All the round's announcements (and dead letters) go to the producer without waiting, then the round
   waits once for the broker to acknowledge them all.
3. Only then are the staged states written to the table, one changelog record per order touched (and in a round
   that drops orders, their partition's retention horizon before their tombstones: table.py).
4. Only once the broker has acknowledged those changelog records (and every earlier round's) do the agent's
   positions move past the round's records (positions.py), and so the commits. The next round does not
   wait for that: it starts at once (the wait was half of a worker's time).
No changelog state is durable before the announcements it stands for: a kill before 3 leaves the states
of before the round on the changelog, and the next owner (or this worker after a restart) applies the
records again and repeats the announcements with the same deterministic ids and status sequences, which
downstream drops. No input offset is committed before the changelog holds what its records changed: a
kill before 4 leaves the records uncommitted, to be applied again on a restored table.
If the broker refuses an announcement, the round is undone: the staged states are dropped (the table
keeps the states before it, so timers fire again and announce again, under the same sequences; a status that
differs from one the undone round may have left on the broker is numbered past it: announcer.py), and the stored
state of each order whose status changes were sent remembers them (`OrderState.landed`), written to the changelog
at once, so the order's next owner after a handover or a restart numbers past them too (only a worker killed before
that record is acknowledged leaves its orders' next owner numbering from the table), and the positions stay, so the
records after the round reach the agent past a hole and their partition is read again from it
(rewind.py). A changelog record refused leaves the table ahead of its changelog: the worker stops
(exit 75) and its partitions are taken over from the last commit. The producer keeps a record through a broker
outage for its request timeout (faust_app.PRODUCER_REQUEST_TIMEOUT_S) before it refuses it, so only an outage
longer than that, with a round's changelog records in flight, ends the worker.

Offsets no record is handed at: a transaction's commit or abort marker takes an offset that no consumer is ever
handed (`credited dlq replay` writes to its source topics in transactions on Apache Kafka). The record after a
marker would come past a hole that no reading again can fill, and a marker at the end would keep the partition
below its end offset for good. So before a partition is read again, the broker is asked where the records it
hands over resume (`FirstReadable`): the offsets before that hold none, and the positions move past them in a
round of their own (`past_unreadable`), in order with the rounds before it.
"""

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError

from contracts.codec import DecodeError, decode
from reconciler import timers
from reconciler.adapters.announcer import KafkaAnnouncer, Outgoing, dead_letter
from reconciler.adapters.metrics import PrometheusObservations, Tally
from reconciler.adapters.positions import ProcessedPositions
from reconciler.adapters.rewind import Rewinder
from reconciler.adapters.table import FaustOrderStates
from reconciler.domain import OrderState
from reconciler.engine import Engine
from reconciler.handlers import handle_event, handle_tick
from reconciler.watermarks import Watermarks

log = logging.getLogger(__name__)

FirstReadable = Callable[[str, int, int, int], Awaitable[int | None]]
"""first_readable(topic, partition, offset, limit): the offset of the first record at or after `offset` a consumer
is handed, `limit` if none is below it, None if the broker could not say (BrokerOffsets.first_readable)."""

EXIT_TRY_AGAIN = 75  # EX_TEMPFAIL: a restart replays from the last commit
ACK_TIMEOUT_S = 60.0
CHANGELOG_PATIENCE_S = 150.0
"""How long changelog records may wait for the broker's acknowledgement before the worker stops: longer than the
producer's own request timeout (faust_app.PRODUCER_REQUEST_TIMEOUT_S), which refuses them first, so a broker
outage the producer rides out costs no exit."""
REFUSED = (KafkaError, ProducerSendError, OSError, TimeoutError)
"""What a send the broker refused, or never acknowledged, raises."""


RATE_WINDOW_S = 0.5
"""How long the rate of events that decides whether rounds linger is counted over (rounds.batches)."""


async def batches(
    events: AsyncIterator[Any], in_hand: Callable[[], bool], most: int, linger_s: float
) -> AsyncIterator[list[Any]]:
    """The agent's events as rounds: every event in hand (`in_hand`: more are waiting), up to `most`, so a batch
    grows with the backlog and never waits to fill. While events flow, a batch that has run out of events in hand
    waits `linger_s` once for more (the consumer keeps fetching meanwhile), so a steady stream makes a few fuller
    rounds rather than a round for every record or two: each round costs produce requests, acknowledgements and
    changelog records whatever its size. At most `linger_s` of latency for each event; 0 turns it off.

    The linger follows the traffic: a batch lingers only while the events of the last `RATE_WINDOW_S` or more came
    at least one per `linger_s`, so that a linger can be expected to catch another. In a trickle the linger would
    catch nothing and only make each event wait (at 10 orders/s, 8 ms of a credit's 33 ms to its push at the
    median), so no round waits there. The rate is counted over a window, not read from the last round's size: at
    a few hundred orders/s, a third to most of the rounds that did not linger held a single event, so a rule on the
    last round's size kept switching the linger off at the rates it is for (docs/benchmarks-linger.md)."""
    batch: list[Any] = []
    lingered = False
    # The rate of events (per second) the last window counted; the events of this window so far, and its start.
    rate, counted, since = 0.0, 0, time.monotonic()
    async for event in events:
        batch.append(event)
        if len(batch) < most and not in_hand():
            if linger_s > 0 and not lingered and rate * linger_s >= 1:
                lingered = True
                await asyncio.sleep(linger_s)
                if in_hand():
                    continue
        elif len(batch) < most:
            continue
        yield batch
        counted += len(batch)
        now = time.monotonic()
        if now - since >= RATE_WINDOW_S:
            rate, counted, since = counted / (now - since), 0, now
        batch, lingered = [], False


class Rounds:
    def __init__(
        self,
        *,
        engine: Engine,
        states: FaustOrderStates,
        announcer: KafkaAnnouncer,
        observe: PrometheusObservations,
        positions: ProcessedPositions,
        watermarks: Watermarks,
        rewinder: Rewinder,
        producer: Any,
        dead_letters: str,
        group: str,
        first_readable: FirstReadable | None = None,
    ) -> None:
        self.engine, self.states, self.announcer = engine, states, announcer
        self._first_readable = first_readable
        self.observe, self.positions, self.watermarks, self.rewinder = observe, positions, watermarks, rewinder
        self.producer, self.dead_letters, self.group = producer, dead_letters, group
        self.lock = asyncio.Lock()
        self._applied: dict[tuple[str, int], int] = {}  # per input partition: the next offset to apply
        self._applied_at = 0.0
        # Rounds whose changelog records are not all acknowledged yet: (since, futures, positions after).
        self._unsettled: deque[tuple[float, list[asyncio.Future[Any]], dict[tuple[str, int], int]]] = deque()

    async def records(self, events: Sequence[Any]) -> None:
        """The agent's batch, in the order faust handed it over."""
        async with self.lock, self._undone_if_it_fails():
            now = datetime.now(UTC)
            tally = Tally()
            ahead: dict[tuple[str, int], int] = {}
            dead: list[Outgoing] = []
            holes: dict[tuple[str, int], tuple[int, int]] = {}  # the offset missing, the first one past it
            for event in events:
                msg = event.message
                key = (msg.topic, msg.partition)
                if not self.positions.assigned(*key):
                    continue  # revoked meanwhile: its next owner reads it from the committed offset
                expected = ahead[key] if key in ahead else self.next_offset(*key)
                if expected is not None and msg.offset != expected:
                    if msg.offset > expected:  # a record before it never reached the agent
                        holes.setdefault(key, (expected, msg.offset))
                        self.observe.skipped(msg.topic)
                    continue  # (below: applied already, handed over again after a seek back)
                ahead[key] = msg.offset + 1
                headers = list(msg.headers or [])
                try:
                    message, envelope = decode(event.value, headers)
                except DecodeError as exc:
                    why = f"undecodable: {exc.reason}"
                    dead.append(self._dead_letter(msg, event.value, headers, "undecodable", why))
                    continue
                try:
                    handle_event(
                        message, envelope.event_type, msg.partition, now,
                        engine=self.engine, announcer=self.announcer, observe=tally,
                        arrived_at=datetime.fromtimestamp(msg.timestamp, UTC),  # the broker's, in seconds (faust)
                    )  # fmt: skip
                except Exception as exc:  # noqa: BLE001 - applied in memory, it fails again every time it is read again
                    # Engine.apply does all that can fail before the record has any effect: nothing of it is left.
                    why = f"handler failed: {exc!r}"[:1000]
                    dead.append(self._dead_letter(msg, event.value, headers, "handler_failed", why))
            self.observe.batch_records.observe(len(events))
            if ahead or dead:
                await self._finish(tally, ahead=ahead, dead=dead)
        for (topic, partition), (missing, past) in holes.items():
            missing = await self.past_unreadable(topic, partition, missing, past)
            if not await self.rewinder.past_hole(topic, partition, missing):
                stop(f"{topic}[{partition}]: records keep arriving past {missing}, however often it is read again")

    async def past_unreadable(self, topic: str, partition: int, offset: int, limit: int) -> int:
        """Where `topic[partition]` is to be read again from, for a record missing at `offset`: past the offsets
        before `limit` that hand over no record (module docstring), or `offset` itself. Moving past them is a
        round of its own, and only if the partition still waits at `offset`."""
        if self._first_readable is None:
            return offset
        first = await self._first_readable(topic, partition, offset, limit)
        if first is None or first <= offset:
            return offset
        async with self.lock:
            if not self.positions.assigned(topic, partition) or self.next_offset(topic, partition) != offset:
                return offset  # revoked, or moved meanwhile: whatever comes next is judged afresh
            log.info("%s[%d]: offsets %d to %d hand over no record (transaction markers); past them", topic,
                     partition, offset, first - 1)  # fmt: skip
            await self._finish(Tally(), ahead={(topic, partition): first})
        return first

    async def tick(self, safe_times: dict[int, datetime | None]) -> None:
        """Timers of the partitions given (with their safe times) that are due; the caller holds the lock."""
        assert self.lock.locked()
        async with self._undone_if_it_fails():
            now = datetime.now(UTC)
            tally = Tally()
            expired: list[str] = []
            horizons: dict[int, datetime] = {}  # of the partitions that drop orders: durable before their tombstones
            for partition, safe in safe_times.items():
                gone = handle_tick(partition, now, safe, engine=self.engine, announcer=self.announcer, observe=tally)
                horizon = self.engine.horizon(partition)
                if gone and horizon is not None:
                    horizons[partition] = horizon
                expired += gone
            await self._finish(tally, expired=expired, horizons=horizons, of_timers=True)

    @asynccontextmanager
    async def _undone_if_it_fails(self) -> AsyncIterator[None]:
        """A round that raises leaves nothing behind for the next one to make durable by mistake."""
        try:
            yield
        except BaseException:
            remembered = self._undo([])
            try:  # a cancelled round (the worker stopping) too: what may have landed is for the next owner
                await self._write_remembered(remembered)
            except BaseException as exc:  # noqa: BLE001 - the round's own exception is the one to raise
                log.warning("what an undone round may have announced was not written to the changelog: %r", exc)
            raise

    def _undo(self, expired: list[str]) -> list[OrderState]:
        """Drop the round's states and announcements; time its orders again from their stored states. The stored
        state of every order whose status changes were sent remembers them (they may have landed); those states
        are returned, for their changelog records."""
        now = datetime.now(UTC)
        landed = self.announcer.undone().items()
        remembered = [self.states.remember(o, partition, statuses, now) for o, (partition, statuses) in landed]
        for order_id in self.states.drop_staged() + expired:
            stored = self.states.stored(order_id)
            if stored is not None:
                self.engine.track(stored)
        return [state for state in remembered if state is not None]

    async def _write_remembered(self, remembered: list[OrderState]) -> None:
        """The changelog records of the states an undone round left remembering what may have landed, for whoever
        owns the orders next; a record refused stops the worker like any changelog record (_settle), and its
        orders' next owner numbers from the table."""
        sent = [await self.states.send(state) for state in remembered]
        if sent:
            self._settling(sent, {})

    async def _remember_first(self) -> None:
        """A round of timers: the stored state of every order whose status changes it is about to announce
        remembers them (`OrderState.landed`) on the changelog, acknowledged, before they are sent. A round of records
        that a worker killed before its changelog records were acknowledged is replayed by the partition's next owner
        as it was (same records, same order), but a timer is not: the next owner may read a record first (the credit
        that the killed worker's RetryCredit brought) and change the order otherwise, under the sequence of a status
        already sent (`delayed`), which every reader then drops. Remembered, that status is numbered past it
        (announcer.py). If the broker refuses those records, the round is undone before anything of it is announced:
        the table is put back as its changelog has it, and nothing may have landed."""
        now = datetime.now(UTC)
        built = self.announcer.statuses().items()
        before = {order_id: self.states.stored(order_id) for order_id, _ in built}
        remembered = [self.states.remember(o, partition, statuses, now) for o, (partition, statuses) in built]
        try:
            await _all_acknowledged([await self.states.send(state) for state in remembered if state is not None])
        except BaseException:
            self.states.put_back(before)
            self.announcer.sent()
            raise

    def _settling(self, sent: list["asyncio.Future[Any]"], ahead: dict[tuple[str, int], int]) -> None:
        """Changelog records handed to the producer: the positions `ahead` move once they (and every earlier
        round's) are acknowledged (_settle)."""
        self._unsettled.append((time.monotonic(), sent, ahead))
        for future in sent:
            future.add_done_callback(self._settle)
        self._settle()

    async def _finish(
        self,
        tally: Tally,
        *,
        ahead: dict[tuple[str, int], int] | None = None,
        dead: list[Outgoing] | None = None,
        expired: list[str] | None = None,
        horizons: dict[int, datetime] | None = None,
        of_timers: bool = False,
    ) -> None:
        for state in self.states.staged():
            if state.landed and timers.wake_time(state, self.engine.policy) is None:
                self.announcer.caught_up(state)
        outgoing = (dead or []) + self.announcer.records()
        try:
            if of_timers:
                await self._remember_first()
            await self._send(outgoing)
        except REFUSED as exc:  # undo the round, so all of it happens again
            remembered = self._undo(expired or [])
            self.observe.rounds_undone.inc()
            log.warning("the broker refused the round's announcements (%r); it is undone and tried again", exc)
            await self._write_remembered(remembered)
            return
        self.announcer.sent()
        sent = await self.states.write_staged(expired or (), horizons)
        self.observe.expired_orders.inc(len(expired or ()))
        for key, next_offset in (ahead or {}).items():
            self._applied[key] = next_offset
            self.rewinder.forget(*key)
        if ahead:
            self._applied_at = time.monotonic()
        tally.apply(self.observe)
        self._settling(sent, ahead or {})

    def applied_within(self, seconds: float) -> bool:
        """Whether a round applied records in the last `seconds`."""
        return time.monotonic() - self._applied_at < seconds

    def next_offset(self, topic: str, partition: int) -> int | None:
        """The offset of the next record to apply: where the rounds are, or where the partition was (re)started
        if that is later (another owner committed past this worker's rounds)."""
        position, applied = self.positions.next_offset(topic, partition), self._applied.get((topic, partition))
        if position is None or applied is None:
            return applied if position is None else position
        return max(position, applied)

    def _settle(self, _: object = None) -> None:
        """Move the positions of every round whose changelog records (and every earlier round's) the broker
        has acknowledged. A refused one leaves the table ahead of its changelog: stop."""
        while self._unsettled and all(f.done() for f in self._unsettled[0][1]):
            _, sent, ahead = self._unsettled.popleft()
            failed = next((f for f in sent if f.cancelled() or f.exception() is not None), None)
            if failed is not None:
                why = "cancelled" if failed.cancelled() else repr(failed.exception())
                stop(f"a changelog record was refused ({why}), so the table is ahead of it")
            for (topic, partition), next_offset in ahead.items():
                self.positions.advance(topic, partition, next_offset)
                self.watermarks.processed(topic, partition, next_offset)

    def check_settling(self) -> None:
        """The ticker's check that changelog records do not wait for an acknowledgement forever."""
        if self._unsettled and time.monotonic() - self._unsettled[0][0] > CHANGELOG_PATIENCE_S:
            stop(f"changelog records unacknowledged after {CHANGELOG_PATIENCE_S:.0f}s, so the table is ahead of it")

    async def settled(self) -> None:
        """Until every changelog record sent is acknowledged (before partitions are revoked)."""
        pending = [f for _, sent, _ in self._unsettled for f in sent if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=ACK_TIMEOUT_S)
        self._settle()

    async def _send(self, outgoing: list[Outgoing]) -> None:
        """Hand every record to the producer, then wait once for all the acknowledgements."""
        if not outgoing:
            return
        sent = [await self.producer.send(t, r.key, r.value, None, None, r.headers) for t, r in outgoing]
        await _all_acknowledged(sent)

    def _dead_letter(
        self, msg: Any, value: bytes | None, headers: list[tuple[str, bytes]], kind: str, why: str
    ) -> Outgoing:
        """A record that did not decode (`kind` undecodable) or whose handling failed (handler_failed), with `why`."""
        order = {"order_id": msg.key.decode(errors="replace")} if msg.key else {}  # the key is the order id
        log.error("dead-lettering %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, why, extra=order)
        self.observe.dead_letters.labels(kind).inc()
        return dead_letter(
            self.dead_letters, msg.key or b"", value or b"", headers, why,
            source_topic=msg.topic, source_partition=str(msg.partition), source_offset=str(msg.offset),
            consumer_group=self.group,
        )  # fmt: skip


async def _all_acknowledged(sent: list["asyncio.Future[Any]"]) -> None:
    if not sent:
        return
    done, late = await asyncio.wait(sent, timeout=ACK_TIMEOUT_S)
    if late:
        raise TimeoutError(f"{len(late)} records unacknowledged after {ACK_TIMEOUT_S:.0f}s")
    for future in done:
        if future.exception() is not None:
            raise future.exception()  # type: ignore[misc]


def stop(what: str) -> NoReturn:
    """Stop the process like a crash: nothing past the last commit is lost, the next owner replays it."""
    log.critical("%s; stopping (exit %d): the partitions are taken over from the last commit", what, EXIT_TRY_AGAIN)
    logging.shutdown()
    os._exit(EXIT_TRY_AGAIN)
