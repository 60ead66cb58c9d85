"""The ticker: every tick it follows the consumer's assignment, samples the brokers' end offsets, moves each
partition's safe time (watermarks.py), runs a round of due timers and ended retentions (rounds.py), and
reads again a partition that stands still below its end offset (rewind.TailWatch)."""

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from faust.types import TP

from reconciler.adapters.offsets import BrokerOffsets
from reconciler.adapters.rewind import RecoveryWatch, TailWatch
from reconciler.adapters.rounds import Rounds
from reconciler.watermarks import Watermarks

log = logging.getLogger(__name__)


class Ticker:
    def __init__(
        self,
        app: Any,
        inputs: tuple[str, ...],
        rounds: Rounds,
        watermarks: Watermarks,
        offsets: BrokerOffsets,
        tail: TailWatch,
        tick_s: float,
        recovery: RecoveryWatch | None = None,
    ) -> None:
        self.app, self.inputs, self.rounds, self.watermarks = app, inputs, rounds, watermarks
        self.offsets, self.tail, self.tick_s, self.recovery = offsets, tail, tick_s, recovery
        # Partitions the consumer was handed since the last tick, kept or not: between two ticks a
        # partition can go to another worker and come back with states this worker never timed.
        self._handed: set[int] = set()
        self.joined = False
        """The consumer has been handed an assignment (an empty one too): the worker is in its group."""

    def handed(self, tps: Iterable[TP]) -> None:
        """The consumer's assignment callback: every partition in it starts afresh at the next tick."""
        self._handed |= {tp.partition for tp in tps if tp.topic in self.inputs}
        self.joined = True

    async def run(self) -> None:
        await self.offsets.start()
        try:
            while not self.app.should_stop:
                started = time.monotonic()
                try:
                    await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("reconciler tick failed; it runs again at the next one")
                await asyncio.sleep(max(0.0, self.tick_s - (time.monotonic() - started)))
        finally:
            await self.offsets.stop()

    def _owned(self) -> set[int]:
        """The input partitions in the consumer's assignment, whether or not the agent has started them: the
        partitions whose states the table may hold (restored, or being restored)."""
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic in self.inputs}

    def _assigned(self) -> set[int]:
        positions = self.rounds.positions
        return {
            tp.partition
            for tp in self.app.consumer.assignment()
            if tp.topic in self.inputs and all(positions.assigned(t, tp.partition) for t in self.inputs)
        }

    async def tick(self) -> None:
        self.rounds.check_settling()
        if self.app.in_recovery and self.recovery is not None:
            faust_recovery = self.app.tables.recovery
            await self.recovery.observe(dict(faust_recovery.active_remaining()), dict(faust_recovery.active_offsets))
        if self.app.rebalancing or self.app.in_recovery:
            return
        assigned = self._assigned()
        if not assigned and not self.watermarks.partitions and not self._handed:
            return
        tps = [TopicPartition(t, p) for t in self.inputs for p in sorted(assigned)]
        sampled_at = datetime.now(UTC)
        ends = await self.offsets.end_offsets(tps) if tps else {}
        async with self.rounds.lock:
            assigned &= self._assigned()  # a revocation may have begun while the offsets were sampled
            known = self.watermarks.partitions
            handed, self._handed = self._handed, set()
            again = handed & known & assigned
            if assigned != known or handed:
                await self._reassign(assigned, known, again)
            for p in assigned:
                self.watermarks.observe(p, sampled_at, {t: ends[TopicPartition(t, p)] for t in self.inputs})
            await self.rounds.tick({p: self.watermarks.safe_time(p) for p in sorted(assigned)})
            positions = {(t, p): self.rounds.next_offset(t, p) for t in self.inputs for p in assigned}
        for (t, p), position in positions.items():
            await self.tail.observe(t, p, position, ends[TopicPartition(t, p)])
        self.rounds.observe.watermark_lag.set(self.watermarks.lag_s(datetime.now(UTC)))
        self.rounds.observe.overdue_now.set(self.rounds.states.overdue)
        self.rounds.observe.table_orders.set(self.rounds.states.size)
        self.rounds.observe.assigned_partitions.set(len(self.watermarks.partitions))

    async def _reassign(self, assigned: set[int], known: set[int], again: set[int]) -> None:
        """Partitions revoked are forgotten, their states dropped from the table (their new owner has them);
        partitions new, or handed over again, start from the committed offsets and get their timers rebuilt
        from the table (which holds what any owner wrote). The overdue orders are counted again every time."""
        engine = self.rounds.engine
        for p in (known - assigned) | again:
            self.watermarks.revoke(p)
            engine.forget([p])
            for t in self.inputs:
                self.tail.forget(t, p)
        dropped = self.rounds.states.keep(self._owned())
        if dropped:
            log.info("dropped %d orders of partitions no longer assigned", dropped)
        new = sorted((assigned - known) | again)
        if not new:
            return
        tps = [TopicPartition(t, p) for t in self.inputs for p in new]
        committed = await self.offsets.committed(self.app.conf.id, tps)
        assigned_at = datetime.now(UTC)
        for p in new:
            # Applied already: below the committed offset (in the restored table), and below where the
            # agent is in order (a partition that stayed here is not replayed from the committed offset).
            starts = {
                t: max(committed[TopicPartition(t, p)], self.rounds.positions.next_offset(t, p) or 0)
                for t in self.inputs
            }
            self.watermarks.assign(p, starts, assigned_at)
        pending = engine.rebuild(new, engine.states.values())
        log.info("assigned partitions %s: %d orders waiting on a timer", new, pending)
