"""DeliveryWorker: sends every queued delivery through its channel, retries what can pass, dead-letters the rest.

A delivery's first attempt is handed over in memory by the consumer that queued it, already leased
(`hand_over`); the rest are claimed under a lease (see PostgresDeliveryQueue). Both are attempted concurrently
and settled in batches by one settling task. Retries back off exponentially with jitter, or wait what the receiver's
Retry-After asked; a subscription the push service no longer knows (404/410) is removed. After the last
attempt, and for a removed subscription, the notification goes to the dead-letter topic with the reason,
before its row is settled, so a crash in between repeats the dead letter rather than losing it.

Each channel has its own limit of deliveries in flight (InFlightLimit), the size of its pool of connections
(channels that share a pool share the limit), so no delivery holds a slot waiting for a connection, and a receiver
that hangs (the platform's webhook, say) fills its own slots, never another channel's. A delivery handed over to a
channel at its limit waits in memory for room; one that cannot start within half its lease is left to be claimed
when the lease ends. A claim leaves the deliveries of a channel at its limit in the queue (claimed, each would count
an attempt and wait unattempted) and takes no more than the least room among the others.

An outcome the database cannot take yet (full disk, read-only, restarting) stays in memory and is written when it
comes back. Meanwhile the worker keeps extending the delivery's lease, half a lease before it ends (as it does for a
request still in flight), so no other instance claims it; and should its lease run out all the same and this worker
claim it anew, it is not attempted again. A database that refuses the extension refuses another instance's claim,
the same small in-place update of the same row, as well; a refusal particular to this instance (cut off from the
database while the others reach it) makes it, to the database, a process that died: only a process that dies (or
looks so to the database for half a lease) before settling repeats a delivery. What counts as the database or the
broker being away is servicekit.errors' decision, as everywhere in the project; any other error ends the worker, and
with it the service, which is restarted: a settling task never dies while the worker carries on sending what it
cannot write.

A service that stops calls `finish` (servicekit.infrastructure.Finishing, once the consumers committed their last
polls): the worker claims nothing more, lets the deliveries it started end, writes their outcomes and dead
letters, and `run` returns. Cancelled before that (the stop grace ran out), it names each delivery cut short: those
are the only ones a restart sends again, when their lease ends.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from contracts.codec import Record
from contracts.topics import Topic
from notifier.adapters.metrics import PrometheusNotifierMetrics
from notifier.adapters.queue import Claimed, PostgresDeliveryQueue, Settlement
from notifier.ports import DeliveryChannel, DeliveryFailed
from servicekit.errors import classify
from servicekit.kafka import KafkaPublisher
from servicekit.logs import about, bound
from servicekit.retrying import BackoffPolicy, Outage

log = logging.getLogger(__name__)
SUPERSEDED_RESEND = "a newer status of the order was notified after the resend was asked"
"""Why a resend was settled without being sent (its delivery's last_error)."""


QUEUE_BACKOFF = BackoffPolicy(initial_s=0.5, cap_s=4.0)
"""How long the worker waits to read the queue again while the database is away: from the poll interval, doubling up
to a few seconds (with jitter, so the instances that lost the same database do not all come back at once). Deliveries
that came due meanwhile are claimed within the cap of its return; those a consumer commits meanwhile (hand-overs) go
at once. Writing an outcome or a dead letter, and extending the leases of held deliveries, back off the same way (the
extensions at most a quarter of a lease apart)."""


RETRY_AFTER_FLOOR_S = 60.0
"""The longest a receiver's Retry-After is lengthened to our own backoff: after many attempts, at most a minute."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and for how long a delivery is tried: like a payment platform's webhooks, for days (3 by
    default) with exponential backoff up to an hour apart, so a receiver down for a weekend still gets every
    notification; `max_attempts` caps the attempts too when set (tests, or a channel that wants fewer)."""

    max_attempts: int | None = None
    base_backoff_s: float = 0.5
    max_backoff_s: float = 3600.0
    max_retry_after_s: float = 3600.0
    retry_for_s: float = 3 * 24 * 3600.0

    def delay(self, attempts: int, retry_after_s: float | None) -> float:
        """The receiver's Retry-After if it gave one, else exponential backoff with jitter (half fixed,
        half random, so retries of many deliveries spread out but never come back at once). A Retry-After shorter
        than the backoff's fixed half (at most RETRY_AFTER_FLOOR_S) is lengthened to it: "0", or a date already
        past, would otherwise retry at once, again and again for `retry_for_s`, a receiver that said it is busy."""
        ceiling = min(self.max_backoff_s, self.base_backoff_s * 2.0 ** min(attempts - 1, 64))
        if retry_after_s is not None:
            return min(max(retry_after_s, min(ceiling / 2, RETRY_AFTER_FLOOR_S)), self.max_retry_after_s)
        jitter: float = random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not crypto
        return ceiling / 2 + jitter

    def gives_up(self, attempts: int, age_s: float, delay_s: float) -> bool:
        """No further attempt: the cap of attempts is reached, or the next one would come after `retry_for_s`
        from when the delivery was queued (`age_s` ago: with its notification, or when a person asked a resend)."""
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return True
        return age_s + delay_s > self.retry_for_s


@dataclass(frozen=True, slots=True)
class InFlightLimit:
    """Channels that share one pool of connections, and how many of their deliveries may be in flight at once: the
    pool's size, so that none waits in its slot for a connection."""

    channels: frozenset[str]
    size: int


class _Lane:
    """The deliveries in flight through the channels of one limit, and those waiting in memory for room among them
    (handed over, or claimed while hand-overs took the room), each with when its lease began (monotonic)."""

    def __init__(self, channels: frozenset[str], size: int) -> None:
        self.channels = channels
        self.size = size
        self.in_flight = 0
        self.waiting: deque[tuple[float, Claimed]] = deque()

    @property
    def room(self) -> int:
        return self.size - self.in_flight

    def ended(self, _: object) -> None:
        self.in_flight -= 1


@dataclass(slots=True)
class _Held:
    """A delivery this worker started and has not settled yet: `decided` once its outcome waits to be written;
    `leased_at` (monotonic), when its lease last began."""

    claimed: Claimed
    leased_at: float
    decided: bool = False
    lost: bool = False


class DeliveryWorker:
    def __init__(
        self,
        queue: PostgresDeliveryQueue,
        channels: Mapping[str, DeliveryChannel],
        publisher: KafkaPublisher,
        *,
        policy: RetryPolicy | None = None,
        metrics: PrometheusNotifierMetrics | None = None,
        lease_s: float = 30.0,
        max_in_flight: int = 256,
        limits: Sequence[InFlightLimit] = (),
        batch_size: int = 200,
        poll_interval_s: float = 0.5,
        queue_backoff: BackoffPolicy = QUEUE_BACKOFF,
    ) -> None:
        self._queue = queue
        self._channels = dict(channels)
        self._publisher = publisher
        self._policy = policy or RetryPolicy()
        self._metrics = metrics
        self._lease_s = lease_s
        self._lanes = [_Lane(limit.channels, limit.size) for limit in limits]
        self._rest = _Lane(frozenset(), max_in_flight)
        """The channels given no limit of their own (and any not configured, whose deliveries fail at once)."""
        self._lane_of = {channel: lane for lane in self._lanes for channel in lane.channels}
        self._known = frozenset(self._channels) | frozenset(self._lane_of)
        """The channels a claim can name: those configured and those given a limit."""
        self._batch_size = batch_size
        self._poll = poll_interval_s
        self._queue_backoff = queue_backoff
        self._unread = Outage(queue_backoff)
        """Reads of the queue failing in a row (the database away): the next waits the backoff's delay."""
        self._unextended = Outage(queue_backoff)
        """Extensions of the held deliveries' leases failing in a row: the next waits the backoff's delay, at most a
        quarter of a lease."""
        self._wakeup = asyncio.Event()
        self._settled: asyncio.Queue[Settlement] = asyncio.Queue()
        self._finals: asyncio.Queue[Settlement] = asyncio.Queue()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._unsettled: dict[tuple[str, str], _Held] = {}
        """By (notification id, target): each attempted delivery whose outcome is not written yet."""
        self._all_settled = asyncio.Event()
        self._all_settled.set()
        self._finishing = asyncio.Event()
        self._writing = asyncio.Lock()
        """Held while outcomes are written or leases extended: a lease is never extended after its outcome."""
        self.delivered_total = 0
        self.failed_total = 0

    def wake(self) -> None:
        """New deliveries were committed: claim them now rather than at the next poll."""
        self._wakeup.set()

    def hand_over(self, deliveries: Sequence[Claimed], leased_at: float | None = None) -> None:
        """Deliveries just committed already leased to this worker (their lease running since `leased_at`, this
        process's monotonic time, or now): attempt them now, with no claim query. Those that cannot start within half
        their lease (their channel's limit in flight) are left to be claimed when it ends."""
        since = time.monotonic() if leased_at is None else leased_at
        for delivery in deliveries:
            self._enqueue(delivery, since)
        self._start_waiting()

    def finish(self) -> None:
        """The service is stopping: claim nothing more; `run` returns once every delivery started is settled."""
        self._finishing.set()
        self.wake()

    async def run(self) -> None:
        """Claim and deliver until cancelled, or until `finish` and every delivery started is settled, or until a
        part of the worker fails: then that error is raised."""
        claiming = asyncio.create_task(self._claim_until_finished(), name="claim")
        parts = [
            claiming,
            asyncio.create_task(self._settle_forever(), name="settle"),
            asyncio.create_task(self._dead_letter_forever(), name="dead-letter"),
            asyncio.create_task(self._extend_forever(), name="extend"),
        ]
        try:
            # Each part but the claiming one (after `finish`) runs until cancelled; one that ends has failed, and the
            # outcomes it would have written (or the claims it would have made) are lost with it. Ending `run` stops
            # the service, which is restarted and claims what was not settled when its lease ends.
            done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
            failures = [t for t in done if t is not claiming or t.exception() is not None]
            if not failures:
                log.info("delivery worker finished: every delivery it started is settled")
                return
            failed = failures[0]
            error = failed.exception() or RuntimeError(f"the delivery worker's {failed.get_name()} part ended")
            log.error("the delivery worker's %s part failed; stopping the worker", failed.get_name(), exc_info=error)
            raise error
        except asyncio.CancelledError:
            if self._finishing.is_set():
                self._report_cut()
            raise
        finally:
            for task in (*self._in_flight, *parts):
                task.cancel()
            await asyncio.gather(*parts, *self._in_flight, return_exceptions=True)

    def _report_cut(self) -> None:
        """Name each delivery the end of the stop grace cuts short: sent again when its lease ends."""
        for held in self._unsettled.values():
            d = held.claimed
            log.warning(
                "stopping: notification %s for order %s to %s cut short (%s); the next notifier sends it again when"
                " its lease ends",
                d.notification_id,
                d.order_id,
                d.target_key,
                "its outcome was not written yet" if held.decided else "its request was still in flight",
                extra=about(d.order_id),
            )
        if waiting := self._waiting():
            log.warning("stopping: %d deliveries were never started; due when their lease ends", waiting)

    async def _claim_until_finished(self) -> None:
        await self._claim_forever()
        if waiting := self._waiting():
            log.info("stopping: %d deliveries not started are left to their lease", waiting)
            for lane in (*self._lanes, self._rest):
                lane.waiting.clear()
        await self._all_settled.wait()

    def _waiting(self) -> int:
        return sum(len(lane.waiting) for lane in (*self._lanes, self._rest))

    async def _claim_forever(self) -> None:
        while not self._finishing.is_set():
            self._wakeup.clear()
            self._start_waiting()
            free, full = self._room()
            leased_at = time.monotonic()
            claimed = await self._claim(free, full) if free > 0 else []
            for delivery in claimed:
                self._enqueue(delivery, leased_at)
            self._start_waiting()
            if self._metrics is not None:
                self._metrics.in_flight.set(len(self._in_flight))
            if len(claimed) < free or free <= 0:
                # A wake (a commit or a settle, the database took a write; or `finish`) ends a backoff early too.
                wait = self._unread.delay() if self._unread.failures else self._poll
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), wait)

    def _room(self) -> tuple[int, frozenset[str]]:
        """How many deliveries the next claim may take, and the channels it leaves in the queue: those with no room.
        Never more than the least room among the others, so none it claims waits for room, its attempt counted and
        not made; and nothing while the channels with no limit of their own have no room. While a channel is full the
        claim names the channels it takes (`_claim`): a channel no adapter is configured for (its deliveries fail at
        once) waits meanwhile."""
        if self._rest.room <= 0:
            return 0, frozenset()
        full = frozenset(channel for lane in self._lanes if lane.room <= 0 for channel in lane.channels)
        return min(self._batch_size, self._rest.room, *(lane.room for lane in self._lanes if lane.room > 0)), full

    def _enqueue(self, delivery: Claimed, leased_at: float) -> None:
        if (delivery.notification_id, delivery.target_key) in self._unsettled:
            self._start(delivery, leased_at)  # claimed again while this worker holds it: takes no room, sends nothing
        else:
            self._lane_of.get(delivery.target.channel, self._rest).waiting.append((leased_at, delivery))

    def _start_waiting(self) -> None:
        """Start what waits in memory, each channel as far as its room goes; one that waited past half its lease is
        left to be claimed when the lease ends."""
        now = time.monotonic()
        for lane in (*self._lanes, self._rest):
            while lane.waiting and (lane.room > 0 or now >= lane.waiting[0][0] + self._lease_s / 2):
                leased_at, delivery = lane.waiting.popleft()
                if now < leased_at + self._lease_s / 2:
                    self._start(delivery, leased_at)
                    continue
                log.warning(
                    "notification %s for order %s waited too long in memory; it is claimed when its lease ends",
                    delivery.notification_id,
                    delivery.order_id,
                    extra=about(delivery.order_id),
                )

    def _start(self, delivery: Claimed, leased_at: float) -> None:
        key = (delivery.notification_id, delivery.target_key)
        if (held := self._unsettled.get(key)) is not None:
            # Its lease ran out (the database took no extension) while its outcome waits: not sent again. The claim
            # is this worker's now: the next extension is of it.
            held.claimed, held.leased_at, held.lost = delivery, leased_at, False
            log.info(
                "notification %s for order %s to %s claimed again while its outcome waits to be written; not resent",
                delivery.notification_id,
                delivery.order_id,
                delivery.target_key,
                extra=about(delivery.order_id),
            )
            return
        self._unsettled[key] = _Held(delivery, leased_at)
        self._all_settled.clear()
        with bound(order_id=delivery.order_id):  # the task copies the context: its lines (channels') carry it
            task = asyncio.create_task(self._deliver(delivery))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        lane = self._lane_of.get(delivery.target.channel, self._rest)
        lane.in_flight += 1
        task.add_done_callback(lane.ended)

    async def _claim(self, limit: int, full: frozenset[str]) -> list[Claimed]:
        """Claim what is due; nothing while the database is away, whose failed reads back off (`_unreadable`)."""
        try:
            if full:
                claimed = await self._queue.claim(limit, self._lease_s, channels=self._known - full)
            else:
                claimed = await self._queue.claim(limit, self._lease_s)
        except Exception as exc:
            verdict = classify(exc)
            if not verdict.transient:
                raise
            self._unreadable(verdict.reason, exc)
            return []
        if run := self._unread.ended():
            log.info("delivery worker: queue readable again after %.1fs (%d reads failed)", *run)
        return claimed

    def _unreadable(self, reason: str, exc: Exception) -> None:
        """Count a failed read of the queue. Logged the first time and whenever the backoff grows, until it reaches its
        cap; then nothing until the queue is read again (its line says for how long it was not): over a failover of a
        minute, a handful of lines rather than one each try."""
        if (ceiling := self._unread.failed()) is not None:
            log.warning(
                "delivery worker could not read the queue (%s), will retry with backoff up to %.1fs: %r",
                reason,
                ceiling,
                exc,
            )

    async def _deliver(self, delivery: Claimed) -> None:
        if delivery.superseded:
            # Sent now, it would reach the device after the newer status, under the same push Topic: the user would
            # be told the order went back. Not an attempt, not a failure: settled as it is.
            log.info(
                "resend of notification %s for order %s to %s not sent: a newer status of the order was notified"
                " since it was asked",
                delivery.notification_id,
                delivery.order_id,
                delivery.target_key,
                extra=about(delivery.order_id),
            )
            self._decided(delivery)
            self._settled.put_nowait(Settlement(delivery, "superseded", SUPERSEDED_RESEND))
            return
        started = time.perf_counter()
        try:
            failure = await self._attempt(delivery)
        except BaseException:  # cancelled (shutdown): no outcome to write, the lease decides
            self._release([(delivery.notification_id, delivery.target_key)])
            raise
        settlement = self._decide(delivery, failure)
        self._decided(delivery)
        if self._metrics is not None:
            outcome = "retried" if settlement.state == "pending" else settlement.state
            self._metrics.attempted(delivery.target.channel, outcome, time.perf_counter() - started)
            if failure is None:
                self._metrics.delivered(
                    delivery.target.channel, (datetime.now(UTC) - delivery.queued_at).total_seconds()
                )
        self._settled.put_nowait(settlement)

    async def _attempt(self, delivery: Claimed) -> DeliveryFailed | None:
        if not delivery.subscribed:
            reason = (
                "the subscription was removed (or moved to another user or order, or its status link expired)"
                " before this delivery"
            )
            return DeliveryFailed(reason, retry=False, gone=True)
        channel = self._channels.get(delivery.target.channel)
        if channel is None:
            return DeliveryFailed(f"no {delivery.target.channel} channel is configured", retry=False)
        try:
            await channel.deliver(delivery.payload, delivery.target)
        except DeliveryFailed as exc:
            return exc
        except Exception as exc:  # a bug in a channel must not stop the worker; the delivery is retried
            log.exception("channel %s raised on notification %s", channel.name, delivery.notification_id)
            return DeliveryFailed(f"unexpected error: {exc!r}"[:300], retry=True)
        return None

    def _decide(self, delivery: Claimed, failure: DeliveryFailed | None) -> Settlement:
        if failure is None:
            return Settlement(delivery, "delivered")
        reason = f"{delivery.target.channel}: {failure.reason}"
        if failure.gone:
            return Settlement(delivery, "gone", reason)
        delay = self._policy.delay(delivery.attempts, failure.retry_after_s)
        age_s = (datetime.now(UTC) - delivery.queued_at).total_seconds()
        if failure.retry and not self._policy.gives_up(delivery.attempts, age_s, delay):
            log.warning(
                "notification %s for order %s to %s failed (%s), attempt %d, retry in %.2fs",
                delivery.notification_id,
                delivery.order_id,
                delivery.target_key,
                reason,
                delivery.attempts,
                delay,
                extra=about(delivery.order_id),
            )
            return Settlement(delivery, "pending", reason, delay)
        return Settlement(delivery, "failed", f"undeliverable after {delivery.attempts} attempts: {reason}")

    async def _settle_forever(self) -> None:
        """Settle outcomes as they come. Deliveries and retries are written at once, whatever the broker does,
        so a broker outage never makes a delivered notification go out again when its lease ends. Failures go
        to `_dead_letter_forever`, which settles each only after the broker has taken its dead letter."""
        while True:
            batch = [await self._settled.get()]
            while not self._settled.empty():
                batch.append(self._settled.get_nowait())
            done = [s for s in batch if s.state not in ("failed", "gone")]
            for final in (s for s in batch if s.state in ("failed", "gone")):
                self._finals.put_nowait(final)
            if done:
                await self._until_done("settle", partial(self._settle, done))
                self.delivered_total += sum(1 for s in done if s.state == "delivered")
            if self._metrics is not None:
                self._metrics.in_flight.set(len(self._in_flight))
            self.wake()  # a settled delivery may free the next status of the same order for its target

    async def _dead_letter_forever(self) -> None:
        """Dead-letter failed deliveries, then settle them; while the broker is away they wait here (a lease
        that runs out meanwhile has the delivery claimed again, not attempted: see `_start`)."""
        while True:
            batch = [await self._finals.get()]
            while not self._finals.empty():
                batch.append(self._finals.get_nowait())
            await self._until_done("dead-letter", partial(self._dead_letter, batch))
            await self._until_done("settle", partial(self._settle, batch))
            self.failed_total += len(batch)
            self.wake()

    async def _settle(self, settlements: list[Settlement]) -> None:
        async with self._writing:
            await self._queue.settle(settlements)
            self._forget(settlements)

    async def _extend_forever(self) -> None:
        """Extend the lease of each delivery held past half its lease (its request in flight, or its outcome
        waiting for the database or the broker), so no other instance claims and sends it again."""
        while True:
            wait = min(self._poll, self._lease_s / 4)
            if self._unextended.failures:  # the database is away: try less often, still within a quarter of a lease
                wait = min(self._unextended.delay(), self._lease_s / 4)
            await asyncio.sleep(wait)
            await self._extend_leases()

    async def _extend_leases(self) -> None:
        async with self._writing:
            now = time.monotonic()
            due = [h for h in self._unsettled.values() if now - h.leased_at >= self._lease_s / 2]
            if not due:
                return
            try:
                extended = await self._queue.extend([h.claimed for h in due], self._lease_s)
            except Exception as exc:
                verdict = classify(exc)
                if not verdict.transient:
                    raise
                if (ceiling := self._unextended.failed()) is not None:
                    log.warning(
                        "could not extend the leases of %d deliveries this worker holds (%s), will retry with backoff"
                        " up to %.1fs: %r",
                        len(due),
                        verdict.reason,
                        min(ceiling, self._lease_s / 4),
                        exc,
                    )
                return
            if run := self._unextended.ended():
                log.info(
                    "extended the leases of the deliveries this worker holds again after %.1fs (%d tries failed)", *run
                )
        for held in due:
            d = held.claimed
            if (d.notification_id, d.target_key) in extended:
                held.leased_at = now
            elif not held.lost:
                held.lost = True
                log.warning(
                    "notification %s for order %s to %s: its lease ran out and was claimed again before it could be"
                    " extended; another instance may send it again",
                    d.notification_id,
                    d.order_id,
                    d.target_key,
                    extra=about(d.order_id),
                )

    def _decided(self, delivery: Claimed) -> None:
        held = self._unsettled.get((delivery.notification_id, delivery.target_key))
        if held is not None:
            held.decided = True

    def _forget(self, settled: list[Settlement]) -> None:
        self._release([(s.claimed.notification_id, s.claimed.target_key) for s in settled])

    def _release(self, keys: list[tuple[str, str]]) -> None:
        for key in keys:
            self._unsettled.pop(key, None)
        if not self._unsettled:
            self._all_settled.set()

    async def _until_done(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Repeat `step` while the database or broker is away, until it takes it: a settled outcome is never dropped.
        Any other error is raised, and ends the worker (see `run`). The tries back off as the queue's reads do, and
        are logged the same way: the first failure, each growth of the backoff, then the success."""
        outage = Outage(self._queue_backoff)
        while True:
            try:
                await step()
            except Exception as exc:
                verdict = classify(exc)
                if not verdict.transient:
                    raise
                if (ceiling := outage.failed()) is not None:
                    log.warning(
                        "could not %s deliveries (%s), will retry with backoff up to %.1fs: %r",
                        what,
                        verdict.reason,
                        ceiling,
                        exc,
                    )
                await asyncio.sleep(outage.delay())
                continue
            if run := outage.ended():
                log.info("could %s deliveries again after %.1fs (%d tries failed)", what, *run)
            return

    async def _dead_letter(self, settlements: list[Settlement]) -> None:
        if not settlements:
            return
        topic = Topic.DEAD_LETTER.qualified(self._publisher.topic_prefix)
        now = datetime.now(UTC).isoformat().encode()
        records = []
        for s in settlements:
            d = s.claimed
            reason = s.error or s.state
            log.error(
                "notification %s for order %s to %s dead-lettered: %s",
                d.notification_id,
                d.order_id,
                d.target_key,
                reason,
                extra=about(d.order_id),
            )
            headers = [
                ("dlq_reason", reason.encode()),
                ("dlq_source", b"notifier.delivery"),
                ("dlq_channel", d.target.channel.encode()),
                ("dlq_target", d.target_key.encode()),
                ("dlq_notification_id", d.notification_id.encode()),
                ("dlq_failed_at", now),
            ]
            records.append((topic, Record(key=d.order_id.encode(), value=d.raw_payload, headers=headers)))
            if self._metrics is not None:
                self._metrics.dead_letter(d.target.channel)
        await self._publisher.publish_many(records)
