"""The faust-streaming side of the reconciler: the app, its table, the agent, the ticker and the web pages.

faust lives only here and in commits.py (which keeps committed offsets behind the changelog and behind
what the agent processed). The agent decodes each record at the edge and calls the pure engine through
the handlers; records that do not decode go to the dead-letter topic with the reason. The ticker samples
the brokers' end offsets, moves each partition's safe time (watermarks.py) and fires due timers.
"""

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NoReturn

import faust
from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry, generate_latest

from contracts.codec import DecodeError, decode
from contracts.topics import Topic
from reconciler.adapters.announcer import KafkaAnnouncer
from reconciler.adapters.batch import Batch
from reconciler.adapters.commits import ChangelogAcks, ProcessedPositions, acknowledge_before_commit
from reconciler.adapters.metrics import PrometheusObservations
from reconciler.adapters.offsets import BrokerOffsets
from reconciler.adapters.rewind import Rewinder, TailWatch
from reconciler.adapters.table import FaustOrderStates, OrderTable
from reconciler.config import Settings
from reconciler.domain import Phase
from reconciler.engine import Engine
from reconciler.handlers import handle_event, handle_tick
from reconciler.watermarks import Watermarks

log = logging.getLogger(__name__)

OVERDUE_PHASES = (Phase.RETRYING, Phase.BLOCKING, Phase.REFUNDING)
EXIT_RECORDS_SKIPPED = 75  # EX_TEMPFAIL: a restart replays from the last commit


class SystemClock:
    def now(self) -> float:
        return time.time()


def build_app(settings: Settings, registry: CollectorRegistry) -> faust.App:
    """The faust app: one agent joining payments.events and ledger.events by order id, plus the ticker."""
    prefix = settings.topic_prefix
    app = faust.App(
        f"{prefix}credited-reconciler",
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        web_enabled=True,
        web_host=settings.http_host,
        web_port=settings.http_port,
        web_bind=settings.http_host,
        table_standby_replicas=0,
        # Tansu holds every group join for half the session timeout (faust's 60 s default: 30 s).
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=settings.session_timeout_s,
        broker_commit_interval=1.0,
        topic_disable_leader=True,
    )
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    inputs = (Topic.PAYMENTS_EVENTS.qualified(prefix), Topic.LEDGER_EVENTS.qualified(prefix))
    acks = ChangelogAcks()
    positions = ProcessedPositions(inputs)
    acknowledge_before_commit(app, acks, positions)
    source = app.topic(*inputs, **raw)
    dead_letters = app.topic(Topic.DEAD_LETTER.qualified(prefix), **raw)
    table = app.tables.add(
        OrderTable(
            app,
            name="order-state",
            default=None,
            beacon=app.tables.beacon,
            partitions=settings.topic_partitions,
            acks=acks,
            schema=faust.Schema(key_serializer="json", value_serializer="json"),
        )
    )
    states = FaustOrderStates(table)
    engine = Engine(states, settings.policy())
    observe = PrometheusObservations(registry)
    announcer = KafkaAnnouncer(
        app.topic(Topic.ORDERS_STATUS.qualified(prefix), **raw),
        app.topic(Topic.LEDGER_COMMANDS.qualified(prefix), **raw),
        app.topic(Topic.PAYMENTS_COMMANDS.qualified(prefix), **raw),
        settings.compensation_minor,
    )
    watermarks = Watermarks(inputs)
    offsets = BrokerOffsets(settings.kafka_bootstrap, tansu=settings.kafka_broker == "tansu")
    clock = SystemClock()
    deps: dict[str, Any] = {"engine": engine, "announcer": announcer, "observe": observe, "clock": clock}
    # The agent and the ticker each read a state, announce, then stage the next state (batch.py): run
    # concurrently, one stages a state computed before the other's change and undoes it (a tick's flag
    # overwriting a credit applied meanwhile). One at a time, each transition starts from the last one.
    serial = asyncio.Lock()

    async def seek(topic: str, partition: int, offset: int, why: str) -> None:
        if why == "hole":
            message = "%s[%d]: a record came before the one at %d, which never arrived; reading again from it"
        else:
            message = "%s[%d]: standing at %d, later records on the broker and none arriving; reading again from it"
        log.warning(message, topic, partition, offset)
        observe.read_again(topic, why)
        try:
            await app.consumer.rewind(TP(topic, partition), offset)
        except IllegalStateError:  # revoked meanwhile: its next owner starts at the committed offset
            log.info("%s[%d] is no longer assigned; not read again", topic, partition)

    rewinder = Rewinder(seek, time.monotonic)
    agent_channels: list[Any] = []  # the agent's stream channel, once it runs

    def stuck_for_good(topic: str, partition: int, offset: int) -> None:
        _stop(f"{topic}[{partition}] still stands at {offset} after reading it again from there", offset)

    tail = TailWatch(rewinder, time.monotonic, lambda: any(not c.empty() for c in agent_channels), stuck_for_good)
    batch = Batch(states, announcer.acknowledged, positions)

    async def flush_before_revoke() -> None:
        async with serial:
            await batch.flush()

    app.transport.before_revoke = flush_before_revoke

    @app.agent(source)
    async def join(stream: faust.StreamT) -> None:
        agent_channels[:] = [stream.channel]
        async for event in stream.events():
            msg = event.message
            missing = batch.missing(msg.topic, msg.partition, msg.offset)
            if missing is not None:
                observe.skipped(msg.topic)
                if not await rewinder.past_hole(msg.topic, msg.partition, missing):
                    where = f"{msg.topic}[{msg.partition}]"
                    _stop(
                        f"{where}: record {msg.offset} reached the agent before {missing}, again after reading "
                        "again from it",
                        missing,
                    )
            else:
                rewinder.forget(msg.topic, msg.partition)
                try:
                    decoded = decode(event.value, list(msg.headers or []))
                except DecodeError as exc:
                    await _dead_letter(dead_letters, app.conf.id, msg, event.value, exc.reason)
                    decoded = None
                async with serial:
                    if decoded is not None:
                        await handle_event(*decoded, msg.partition, **deps)
                    watermarks.processed(msg.topic, msg.partition, msg.offset + 1)
                    batch.processed(msg.topic, msg.partition, msg.offset)
            if batch.records and (batch.full or stream.channel.empty()):
                async with serial:
                    observe.batch_records.observe(batch.records)
                    try:
                        await batch.flush()
                    except Exception:
                        log.exception("the broker refused an announcement; the batch is read again")
                        engine.rebuild(watermarks.partitions, states.values())

    ticker = Ticker(
        app, inputs, engine, states, watermarks, offsets, observe, deps, settings.tick_s, serial, batch, tail
    )
    app.transport.on_assigned = ticker.handed

    @app.task
    async def tick() -> None:
        await ticker.run()

    _pages(app, table, states, registry)
    return app


class Ticker:
    """Every tick: follow the assignment, sample end offsets, advance safe times, fire due timers, and
    read again a partition that stands still below its end offset (rewind.TailWatch)."""

    def __init__(
        self,
        app: faust.App,
        inputs: tuple[str, ...],
        engine: Engine,
        states: FaustOrderStates,
        watermarks: Watermarks,
        offsets: BrokerOffsets,
        observe: PrometheusObservations,
        deps: dict[str, Any],
        tick_s: float,
        serial: asyncio.Lock,
        batch: Batch,
        tail: TailWatch,
    ) -> None:
        self.app, self.inputs, self.engine, self.states, self.watermarks = app, inputs, engine, states, watermarks
        self.offsets, self.observe, self.deps, self.tick_s = offsets, observe, deps, tick_s
        self.serial, self.batch, self.tail = serial, batch, tail
        self._last_gauge = 0.0
        # Partitions the consumer was handed since the last tick, kept or not: between two ticks a
        # partition can go to another worker and come back with states this worker never timed.
        self._handed: set[int] = set()

    def handed(self, tps: Iterable[TP]) -> None:
        """The consumer's assignment callback: every partition in it starts afresh at the next tick."""
        self._handed |= {tp.partition for tp in tps if tp.topic in self.inputs}

    async def run(self) -> None:
        await self.offsets.start()
        try:
            while not self.app.should_stop:
                started = time.monotonic()
                await self.tick_once()
                await asyncio.sleep(max(0.0, self.tick_s - (time.monotonic() - started)))
        finally:
            await self.offsets.stop()

    async def tick_once(self) -> None:
        try:
            await self.tick()
            async with self.serial:
                await self.batch.flush()  # the tick's, and whatever the agent left staged
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reconciler tick failed; timers are rebuilt from the table")
            self.engine.rebuild(self.watermarks.partitions, self.engine.states.values())

    def _assigned(self) -> set[int]:
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic in self.inputs}

    async def tick(self) -> None:
        if self.app.rebalancing or self.app.in_recovery:
            return
        assigned = self._assigned()
        known = self.watermarks.partitions
        handed, self._handed = self._handed, set()
        again = handed & known & assigned
        if assigned != known or again:
            await self._reassign(assigned, known, again)
        if not assigned:
            return
        tps = [TopicPartition(t, p) for t in self.inputs for p in sorted(assigned)]
        sampled_at = datetime.now(UTC)
        ends = await self.offsets.end_offsets(tps)
        for p in assigned:
            self.watermarks.observe(p, sampled_at, {t: ends[TopicPartition(t, p)] for t in self.inputs})
            for t in self.inputs:
                await self.tail.observe(t, p, self.batch.next_offset(t, p), ends[TopicPartition(t, p)])
        oldest: datetime | None = None
        for p in sorted(assigned):
            safe = self.watermarks.safe_time(p)
            if safe is not None and (oldest is None or safe < oldest):
                oldest = safe
            async with self.serial:
                await handle_tick(p, safe, **self.deps)
        if oldest is not None:
            self.observe.watermark_lag.set((datetime.now(UTC) - oldest).total_seconds())
        self._update_overdue_gauge()

    async def _reassign(self, assigned: set[int], known: set[int], again: set[int]) -> None:
        """Partitions revoked are forgotten; partitions new, or handed over again, start from the
        committed offsets and get their timers rebuilt from the table (which holds what any owner wrote)."""
        for p in (known - assigned) | again:
            self.watermarks.revoke(p)
            self.engine.forget([p])
            for t in self.inputs:
                self.tail.forget(t, p)
        new = sorted((assigned - known) | again)
        if not new:
            return
        tps = [TopicPartition(t, p) for t in self.inputs for p in new]
        committed = await self.offsets.committed(self.app.conf.id, tps)
        for p in new:
            # Applied already: below the committed offset (in the restored table), and below where the
            # agent is in order (a partition that stayed here is not replayed from the committed offset).
            starts = {t: max(committed[TopicPartition(t, p)], self.batch.next_offset(t, p) or 0) for t in self.inputs}
            self.watermarks.assign(p, starts)
        pending = self.engine.rebuild(new, self.engine.states.values())
        log.info("assigned partitions %s: %d orders waiting on a timer", new, pending)

    def _update_overdue_gauge(self) -> None:
        if time.monotonic() - self._last_gauge < 5:
            return
        self._last_gauge = time.monotonic()
        self.observe.overdue_now.set(self.states.count_in(OVERDUE_PHASES))


def _stop(what: str, missing: int) -> NoReturn:
    """faust keeps handing the agent records past ones it never handed over, or none at all, however
    often the partition is read again (rewind.py): stop the process like a crash, before a record past
    the hole touches the table or the safe time."""
    log.critical(
        "%s; stopping: nothing past %d was committed, and the next owner of the partition replays from there",
        what,
        missing,
    )
    logging.shutdown()
    os._exit(EXIT_RECORDS_SKIPPED)


async def _dead_letter(topic: faust.TopicT, group: str, msg: Any, value: bytes | None, reason: str) -> None:
    log.error("dead-lettering %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason)
    headers = [(k, v) for k, v in (msg.headers or []) if not k.startswith("dlq_")] + [
        ("dlq_reason", f"undecodable: {reason}".encode()),
        ("dlq_source_topic", msg.topic.encode()),
        ("dlq_source_partition", str(msg.partition).encode()),
        ("dlq_source_offset", str(msg.offset).encode()),
        ("dlq_consumer_group", group.encode()),
        ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
    ]
    await (await topic.send(key=msg.key or b"", value=value or b"", headers=headers))


def _pages(app: faust.App, table: faust.Table, states: FaustOrderStates, registry: CollectorRegistry) -> None:
    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            ready = not app.rebalancing and not app.in_recovery
            return self.json({"status": "ok" if ready else "starting"}, status=200 if ready else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # aiohttp (under faust's web server) refuses a charset inside content_type; the exposition
            # format is ASCII, so the plain type with its version is what Prometheus needs.
            return self.bytes(generate_latest(registry), content_type="text/plain; version=0.0.4")

    @app.page("/v1/orders/{order_id}/timeline")
    @app.table_route(table=table, match_info="order_id")
    async def timeline(web: Any, request: Request, order_id: str) -> Response:
        """Every event and status of one order in time order, for support staff and on-call engineers."""
        state = states.get(order_id)
        if state is None:
            return web.json({"error": "unknown_order", "detail": f"no order {order_id}"}, status=404)
        return web.json(
            {
                "order_id": state.order_id,
                "user_id": state.user_id,
                "amount": state.amount,
                "currency": state.currency,
                "channel": state.channel,
                "phase": state.phase.value,
                "status": state.status.value,
                "deadline": state.deadline.isoformat() if state.deadline else None,
                "retry_attempts": state.attempts,
                "anomaly": state.anomaly,
                "timeline": [{"what": what, "at": at} for what, at in sorted(state.history, key=lambda h: h[1])],
            }
        )
