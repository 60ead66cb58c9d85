"""faust's aiokafka transport with what the reconciler needs changed, each change for a faust behaviour
seen on Apache Kafka and kept because a test shows it is still needed.

1. Input offsets are committed where the agent is (positions.ProcessedPositions), never at faust's own
   offsets. faust counts a record as done when its stream skips it (flow stopped, or an older consumer
   generation: `Stream._c_aiter` acks what it skips), when a flow resume empties the stream queues it was
   in (mode's `FlowControlEvent.resume`), and it fills every gap in the acknowledged offsets
   (`Consumer._add_gap`) as if acked: committing there loses records nobody applied (missed and false
   flags). The agent's position only moves once a round is durable (rounds.py), so a commit never runs
   ahead of the changelog either. Tests: test_consumer.py (committing at the position, not faust's gap-filled
   offset); the SIGKILL and rebalance tests in tests/e2e/test_reconciler_resilience.py.
2. An input partition is resumed only once the seek to the committed offsets has returned and the flow has
   resumed: faust's recovery resumes partitions, then seeks, then resumes the flow, and records fetched in
   between are counted as read and dropped with the queues (seen: a worker taking over ledger.events[1] at
   176 processed 176-180, then 191 onwards). Test: test_consumer.py.
3. An input partition the group never committed is sought to its first offset: aiokafka's
   `seek_to_committed` leaves it wherever its fetcher was (seen: a restarted worker began a never committed
   ledger.events[3] at 32). Test: test_consumer.py.
4. Every seek runs on the consumer's own thread (`seek_wait`): faust keeps aiokafka's consumer on a thread
   with its own loop, and `Consumer.seek` calls aiokafka's seek from the app's thread, whose futures then
   never wake the other loop (seen: a seek back to a hole repeated for minutes with nothing arriving).
   A seek back also fences faust's read offset (rewind.FencedReadOffsets). Test: test_consumer.py.
5. A revocation waits for the round in progress and then stops the agent and the ticker from touching the
   revoked partitions, before faust revokes them: a state written after a partition moved would overwrite
   the new owner's on the changelog.
6. The producer is idempotent when the broker allows it (faust enables idempotence only for transactions),
   and the consumer's fetch wait is the shared setting (faust fixes it at 1.5 s; Tansu answers a waiting
   fetch only at that deadline, so every event would wait that long there).
7. Creating a topic (the table's changelog, at start) waits for the broker's answer at most the request's own
   timeout, then asks again: faust hands that timeout, in milliseconds, to mode's `wait`, which takes seconds,
   so a request the broker never answered held the worker 20,000 s before it joined its group (seen on Tansu:
   both restarted workers of an instance stuck at "Creating topic" for five minutes, detecting nothing).
   Test: test_topic_creation.py.
"""

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerT, ProducerT

from reconciler.adapters.positions import ProcessedPositions
from reconciler.adapters.rewind import FencedReadOffsets
from reconciler.adapters.tansu import true_end_offsets

log = logging.getLogger(__name__)


class ReconcilerConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]  # faust is untyped
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.transport.fetch_max_wait_ms  # read by start() to build its fetcher
        return consumer

    async def _highwaters(self, partitions: Any) -> Mapping[Any, int]:
        """faust reads a changelog only up to this when it recovers; Tansu's answer is short (tansu.py)."""
        ends: Mapping[Any, int] = await super()._highwaters(partitions)
        if self.transport.tansu:
            return await true_end_offsets(self.transport.bootstrap, ends)
        return ends


class ReconcilerConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    _resume_after_seek: set[TP] | None = None
    _sought = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = FencedReadOffsets()

    def _new_consumer_thread(self) -> ReconcilerConsumerThread:
        return ReconcilerConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def _positions(self) -> ProcessedPositions:
        positions: ProcessedPositions = self.transport.positions
        return positions

    async def rewind(self, tp: TP, offset: int) -> None:
        """Read `tp` again from `offset`, which the agent is missing (rewind.py). (4)"""
        await self.seek_wait({tp: offset})
        if offset > 0:
            self._read_offset.fence(tp, offset)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        """(2) Input partitions are held back until both the seek and the flow resume are done."""
        tps = set(tps)
        inputs = {tp for tp in tps if self._positions.is_input(tp)}
        if inputs:
            self._resume_after_seek = (self._resume_after_seek or set()) | inputs
            self._sought = False
        super().resume_partitions(tps - inputs)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        self._sought = True
        self._resume_held_back()

    def resume_flow(self) -> None:
        super().resume_flow()
        self._resume_held_back()

    def _resume_held_back(self) -> None:
        if self._sought and self.flow_active and self.app.flow_control.is_active() and self._resume_after_seek:
            resuming, self._resume_after_seek = self._resume_after_seek, None
            super().resume_partitions(resuming & set(self.assignment()))

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """(3) Seek to the committed offsets, and a never committed input partition to its first offset."""
        committed: Mapping[TP, int] = await super().seek_to_committed()
        starts: dict[TP, int | None] = dict(committed)
        uncommitted = [tp for tp, offset in committed.items() if self._positions.is_input(tp) and not offset]
        if uncommitted:
            earliest = await self.earliest_offsets(*uncommitted)
            starts.update({tp: earliest[tp] for tp in uncommitted})
            await self.seek_wait({tp: earliest[tp] for tp in uncommitted})
        self._positions.started(starts)
        return committed

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        await self.transport.before_revoke(revoked)  # (5)
        await super().on_partitions_revoked(revoked)
        if self._resume_after_seek:
            self._resume_after_seek -= set(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self._positions.keep_only(assigned)
        await super().on_partitions_assigned(assigned, generation_id)
        self.transport.on_assigned(assigned)

    def _filter_committable_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        """(1) Input partitions at the agent's position; the changelog's at faust's offsets."""
        tps = list(tps)
        offsets = {
            tp: offset
            for tp, offset in super()._filter_committable_offsets(tps).items()
            if not self._positions.is_input(tp)
        }
        for tp, position in self._positions.committable(tps).items():
            if self._should_commit(tp, position):
                offsets[tp] = position
        return offsets


class ReconcilerProducer(faust_aiokafka.Producer):  # type: ignore[misc]
    def _settings_extra(self) -> Mapping[str, Any]:
        """(6) Idempotence as the settings say (it follows the broker: Tansu refuses it)."""
        extra: Mapping[str, Any] = super()._settings_extra()
        return {**extra, "enable_idempotence": True} if self.transport.idempotent else extra


async def _nothing(revoked: set[TP]) -> None:
    return None


class ReconcilerTransport(faust_aiokafka.Transport):  # type: ignore[misc]
    Consumer: ClassVar[type[ConsumerT]] = ReconcilerConsumer
    Producer: ClassVar[type[ProducerT]] = ReconcilerProducer

    def __init__(
        self, app: faust.App, positions: ProcessedPositions, *, idempotent: bool, fetch_max_wait_ms: int, tansu: bool
    ) -> None:
        super().__init__(app.conf.broker_consumer, app)
        self.positions = positions
        self.idempotent, self.fetch_max_wait_ms, self.tansu = idempotent, fetch_max_wait_ms, tansu
        self.bootstrap = ",".join(f"{url.host}:{url.port or 9092}" for url in app.conf.broker_consumer)
        self.before_revoke: Callable[[set[TP]], Awaitable[None]] = _nothing
        self.on_assigned: Callable[[set[TP]], None] = lambda assigned: None

    async def _really_create_topic(self, owner: Any, client: Any, topic: str, *args: Any, **kwargs: Any) -> None:
        """(7) faust's topic creation, each attempt bounded by its request's timeout (in ms) and asked again."""
        timeout_s = kwargs.get("timeout", 30_000) / 1000
        for attempt in itertools.count(1):
            create = super()._really_create_topic(owner, client, topic, *args, **kwargs)
            try:
                await asyncio.wait_for(create, timeout_s)
                return
            except TimeoutError:
                log.warning(
                    "the broker did not answer the creation of topic %s within %.0f s (attempt %d): asking again",
                    topic,
                    timeout_s,
                    attempt,
                )
