"""The infrastructure a service's composition root builds once: pool, publisher, outbox relay, consumers,
and the service's metrics registry with the credited_* metrics they report.

A service outlives its dependencies: built without connecting anything (`open(..., connect=False)`), it serves
HTTP at once, /healthz answering 503 and naming what it waits for, connects to PostgreSQL and to the broker with
backoff (servicekit.retrying), each reported apart, and starts its relay and consumers once both are up. Only a
final refusal (a wrong password, a migration that fails) stops it.
"""

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from contracts.catalog import CATALOG
from contracts.topics import Topic
from servicekit.consumer import KafkaConsumerLoop
from servicekit.errors import Dependency, Kind, classify
from servicekit.identity import Authenticator, PostgresKeyStore
from servicekit.kafka import BatchHandler, DeadLetterPublisher, KafkaPublisher, ensure_topics
from servicekit.kafka_access import topics_to_ensure
from servicekit.kafka_security import aiokafka_security, check_credentials
from servicekit.metrics import ServiceMetrics
from servicekit.metrics_server import serve_metrics, serves_metrics
from servicekit.outbox import OutboxRelay
from servicekit.postgres import ensure_schema, lazy_pool, migrate
from servicekit.retention import Retention
from servicekit.retrying import BackoffPolicy, Readiness, call_with_retry, retrying
from servicekit.runner import freeze_startup, run_until_stopped
from servicekit.serving import serve
from servicekit.settings import ServiceSettings
from servicekit.uow import batch, savepoint

log = logging.getLogger(__name__)

CONNECTING = BackoffPolicy(initial_s=0.5, cap_s=10.0)
"""How a service waits for PostgreSQL and the broker at start: without limit while they are away."""
W = TypeVar("W")
_START = "start"
_PROBE = "probe"
OUTBOX_RESERVE_S = 1.0
"""Of the stop grace, what finishing tasks leave for publishing the last polls' outbox rows (at most half of it)."""


@dataclass(frozen=True)
class Finishing:
    """An `extra` task of `Infrastructure.run` that ends by itself once told to: when the service stops, after the
    consumers committed their last polls, `finish` is called and the task is awaited within the stop grace, not
    cancelled at once (a delivery worker letting its requests in flight end and writing their outcomes). Any other
    extra task is one that never ends by itself, and is cancelled."""

    work: Coroutine[Any, Any, None]
    finish: Callable[[], None]


def carried_by(topics: Sequence[Topic], prefix: str) -> dict[str, list[str]]:
    """The message types each of `topics` carries by the contracts catalogue, by the topic's name on the broker: a
    consumer refuses any other type it acts on from there (servicekit.consumer, `wrong_topic`)."""
    specs = {spec.topic: spec for spec in CATALOG}
    return {t.qualified(prefix): [m.event_type for m in specs[t].messages] for t in topics if t in specs}


@dataclass
class Infrastructure:
    """Everything with a connection in it; built by `open`, released by `close`."""

    service: str
    settings: ServiceSettings
    pool: asyncpg.Pool
    publisher: KafkaPublisher
    relay: OutboxRelay
    metrics: ServiceMetrics
    readiness: Readiness
    keys: PostgresKeyStore
    authenticator: Authenticator
    """Who may call the service's HTTP API: API keys, each looked up once per cache period."""
    migrations: Path | None = None
    consumers: list[KafkaConsumerLoop] = field(default_factory=list)
    metrics_interval_s: float = 5.0
    connected: bool = False

    @property
    def registry(self) -> CollectorRegistry:
        """The service's Prometheus registry: the metrics port serves it; services add their own metrics to it."""
        return self.metrics.registry

    def outbox_writers(self, kind: Callable[..., W], /, **options: Any) -> Callable[[], W]:
        """A factory of `kind`, a unit of work or another writer of the outbox (made as `kind(pool, *, producer,
        topic_prefix, on_commit, **options)`), on this service's pool, producer and topic prefix, waking this
        relay whenever one commits rows: they are published at once, not on the relay's fallback poll."""
        return functools.partial(
            kind,
            self.pool,
            producer=self.service,
            topic_prefix=self.settings.topic_prefix,
            on_commit=self.relay.wake,
            **options,
        )

    @classmethod
    async def open(
        cls, service: str, settings: ServiceSettings, migrations: Path | None, *, connect: bool = True
    ) -> "Infrastructure":
        """Everything built; connected (PostgreSQL migrated, topics ensured, the publisher started) unless
        `connect` is False, when `run` connects in the background while HTTP already answers."""
        metrics = ServiceMetrics(service, CollectorRegistry(auto_describe=True))
        readiness = Readiness(on_change=metrics.dependency)
        for dependency in (Dependency.DATABASE, Dependency.BROKER):
            readiness.away(dependency, "not connected yet", _START)
        pool = await lazy_pool(settings.database_url, settings.db_schema)
        publisher = KafkaPublisher(
            settings.kafka_bootstrap,
            idempotence=settings.idempotent_producer,
            client_id=service,
            topic_prefix=settings.topic_prefix,
            tuning=settings.kafka_tuning,
            security=aiokafka_security(settings),
        )
        relay = OutboxRelay(pool, publisher, metrics=metrics.outbox(), readiness=readiness)
        # API keys live in one schema every service reads through its own pool (servicekit.identity.store).
        keys = PostgresKeyStore(pool, settings.identity_schema)
        authenticator = Authenticator(
            keys, ttl_s=settings.api_key_cache_ttl_s, development_keys=settings.environment == "development"
        )
        infra = cls(service, settings, pool, publisher, relay, metrics, readiness, keys, authenticator, migrations)
        if connect:
            await infra.connect()
        return infra

    async def connect(self) -> None:
        """Wait for PostgreSQL (schema, migrations) and the broker (credentials, topics, publisher), each with
        backoff and reported apart in `readiness`; raises only what retrying cannot help."""
        if self.connected:
            return
        await asyncio.gather(self._connect_database(), self._connect_broker())
        self.connected = True

    async def _connect_database(self) -> None:
        async def prepare() -> None:
            await ensure_schema(self.pool, self.settings.db_schema)
            await migrate(self.pool, *([self.migrations] if self.migrations else []))
            await self.keys.migrate()

        await call_with_retry(
            prepare, CONNECTING, dependency=Dependency.DATABASE, readiness=self.readiness, source=_START
        )

    async def _connect_broker(self) -> None:
        settings = self.settings

        async def prepare() -> None:
            await check_credentials(settings, client_id=self.service)
            topics = [t.qualified(settings.topic_prefix) for t in topics_to_ensure(self.service, settings)]
            await ensure_topics(
                settings.kafka_bootstrap, topics, settings.topic_partitions, security=aiokafka_security(settings)
            )
            await self.publisher.start()

        await call_with_retry(
            prepare, CONNECTING, dependency=Dependency.BROKER, readiness=self.readiness, source=_START
        )

    def consume(
        self, group: str, topics: Sequence[Topic], handler: BatchHandler, *, members: int = 1
    ) -> list[KafkaConsumerLoop]:
        """Consumers of `topics` in consumer group `group` that hand each poll to `handler` in one database
        transaction (`route` makes one from per-message handlers). With several `members` this process holds
        several of the group's partitions' shares, each polled and handled on its own: one member's database
        round trips overlap another's Python work, as separate instances would, and each partition still has one
        member, so one order's messages stay in order."""
        loops = [
            KafkaConsumerLoop(
                bootstrap=self.settings.kafka_bootstrap,
                group_id=f"{self.settings.topic_prefix}{group}",
                topics=[t.qualified(self.settings.topic_prefix) for t in topics],
                handler=handler,
                dead_letters=DeadLetterPublisher(self.publisher),
                tuning=self.settings.kafka_tuning,
                batch_scope=lambda: batch(self.pool),
                message_scope=savepoint,
                metrics=self.metrics.consumer(group, [t.value for t in topics], self.settings.topic_prefix),
                security=aiokafka_security(self.settings),
                readiness=self.readiness,
                carried=carried_by(topics, self.settings.topic_prefix),
            )
            for _ in range(members)
        ]
        self.consumers += loops
        return loops

    async def run(self, app: ASGIApp, *extra: Coroutine[Any, Any, None] | Finishing) -> None:
        """Serve HTTP, and /metrics on its own port (servicekit.metrics_server), at once; once PostgreSQL and the
        broker are up, relay the outbox, consume and run `extra` tasks; until SIGTERM/SIGINT. Then stop
        gracefully, within `stop_grace_s`: no new HTTP connections and the requests in flight answered, each
        consumer's poll in hand handled and committed, `Finishing` tasks told to finish and awaited, the outbox
        relay's sends in flight acknowledged and the outbox emptied; the other `extra` tasks are cancelled."""
        log.info("%s listening on http://%s:%d", self.service, self.settings.http_host, self.settings.http_port)
        stopping, grace_s = asyncio.Event(), self.settings.stop_grace_s
        host, port = self.settings.http_host, self.settings.http_port
        served = asyncio.Event()
        listeners = [_serving(served, serve(app, host, port, stopping=stopping, grace_s=grace_s))]
        if serves_metrics():  # one listener for all the copies of the service, in the first
            metrics_host, metrics_port = self.settings.metrics_address
            log.info("%s serving /metrics on http://%s:%d", self.service, metrics_host, metrics_port)
            listeners.append(serve_metrics(self.registry, metrics_host, metrics_port, stopping=stopping, grace_s=1))
        await run_until_stopped(
            [*listeners, self._work(extra, stopping, served)],
            on_stop=self.close,
            stopping=stopping,
            grace_s=grace_s,
        )

    async def _work(
        self, extra: Sequence[Coroutine[Any, Any, None] | Finishing], stopping: asyncio.Event, served: asyncio.Event
    ) -> None:
        finishing = [e for e in extra if isinstance(e, Finishing)]
        plain = [e for e in extra if not isinstance(e, Finishing)]
        try:
            joining = asyncio.create_task(self._connect_and_join())
            if not await _unless_stopping(joining, stopping):
                log.info("%s stopped before its dependencies were up", self.service)
                await self._drain_before_working(served)
                await asyncio.gather(joining, return_exceptions=True)  # cut at the grace if the broker holds it
                return
            log.info("%s connected to PostgreSQL and the broker: working", self.service)
            frozen = freeze_startup()
            log.debug("%s left %d start-up objects out of garbage collection", self.service, frozen)
            async with asyncio.TaskGroup() as tasks:
                consuming = [tasks.create_task(c.run()) for c in self.consumers]
                pruning = Retention(self.pool, keep_s=self.settings.processed_events_keep_s).run()
                others = [tasks.create_task(t) for t in (self.relay.run(), self.observe(), pruning, *plain)]
                finishers = {tasks.create_task(f.work, name=_name(f.work)): f.finish for f in finishing}
                tasks.create_task(self._finish_when(stopping, consuming, others, finishers, served=served))
        finally:
            for coroutine in (*plain, *(f.work for f in finishing)):
                coroutine.close()  # never started when the service stops before its dependencies came

    async def _connect_and_join(self) -> None:
        await self.connect()
        self.readiness.away(Dependency.BROKER, "joining the consumer groups", _START)
        # The groups are joined at once, not one after another: a join takes about 5 s on the embedded Tansu broker
        # (0.03 s on Apache Kafka), so payments' three groups kept it from working for 15 s one at a time.
        await start_all(
            [
                functools.partial(
                    retrying(CONNECTING, dependency=Dependency.BROKER, readiness=self.readiness, source=_START),
                    consumer.start,
                )
                for consumer in self.consumers
            ]
        )
        self.readiness.back(Dependency.BROKER, _START)

    async def _finish_when(
        self,
        stopping: asyncio.Event,
        consuming: "list[asyncio.Task[None]]",
        others: "list[asyncio.Task[None]]",
        finishers: "dict[asyncio.Task[None], Callable[[], None]]",
        *,
        served: asyncio.Event | None = None,
    ) -> None:
        """Once stopping: each consumer finishes and commits its poll in hand; then the `Finishing` tasks are told
        to finish (what the last polls gave them included) and awaited, until the grace leaves only
        OUTBOX_RESERVE_S, past which they are cut short and named; the HTTP requests in flight are waited for
        (`served`) as long; the outbox relay stops (waiting for the acknowledgements of its sends in flight) with
        the other tasks, which are cancelled; then what the last polls and requests wrote to the outbox is
        published, so the next instance has nothing of this one's left to send."""
        await stopping.wait()
        grace_s = self.settings.stop_grace_s
        deadline = time.monotonic() + grace_s - min(OUTBOX_RESERVE_S, grace_s / 2)
        for consumer in self.consumers:
            consumer.finish()
        if consuming:
            await asyncio.wait(consuming)
            log.info("%s: every consumer committed its last poll", self.service)
        await self._finish(finishers, deadline)
        if served is not None:
            await self._served(served, deadline)
        for task in others:
            task.cancel()
        await asyncio.wait(others)
        await self._empty_outbox()

    async def _drain_before_working(self, served: asyncio.Event) -> None:
        """Stopped before the relay ever ran: HTTP took orders and callbacks all the same once PostgreSQL was up
        (the broker's consumer groups still joining, or the broker away). What they wrote to the outbox is
        published now if the publisher is connected, once the requests in flight are answered (until the grace
        leaves only OUTBOX_RESERVE_S), so the next instance has nothing of this one's left to send; with the broker
        away it stays in the outbox for the next start."""
        grace_s = self.settings.stop_grace_s
        await self._served(served, time.monotonic() + grace_s - min(OUTBOX_RESERVE_S, grace_s / 2))
        if not self.connected:
            log.info("%s: the broker never connected; what the outbox holds is sent by the next start", self.service)
            return
        await self._empty_outbox()

    async def _empty_outbox(self) -> None:
        """Publish every row the outbox holds, batch after batch; a failure leaves them for the next start."""
        published = 0
        try:
            while sent := await self.relay.publish_batch():
                published += sent
        except Exception as exc:  # noqa: BLE001 - the rows stay in the outbox for the next start: say so and stop
            log.warning("%s: outbox not emptied before stopping, the next start sends it: %r", self.service, exc)
            return
        log.info("%s: outbox emptied (%d rows published while stopping)", self.service, published)

    async def _finish(self, finishers: "dict[asyncio.Task[None], Callable[[], None]]", deadline: float) -> None:
        """Tell each finishing task to finish and wait for them until `deadline`; cancel and name what is left."""
        if not finishers:
            return
        for finish in finishers.values():
            finish()
        _, cut = await asyncio.wait(finishers, timeout=max(0.0, deadline - time.monotonic()))
        if cut:
            names = ", ".join(sorted(task.get_name() for task in cut))
            log.warning(
                "%s: the stop grace ran out before these tasks finished, cutting them short: %s", self.service, names
            )
            for task in cut:
                task.cancel()
            await asyncio.wait(cut)
        else:
            log.info("%s: every finishing task finished", self.service)

    async def _served(self, served: asyncio.Event, deadline: float) -> None:
        """Wait until HTTP answered its requests in flight, until `deadline`: an order or a callback committed while
        the service stops is published by the drain after it, not left in the outbox for the next start."""
        try:
            await asyncio.wait_for(served.wait(), timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            log.warning("%s: HTTP requests still in flight; what they commit is sent by the next start", self.service)

    async def observe(self) -> None:
        """Sample what is only known by asking (consumer lag, outbox backlog) into the metrics, and whether the
        database and the broker answer, until cancelled."""
        while True:
            await self._probe(Dependency.DATABASE, self.relay.observe_backlog)
            await self._probe(Dependency.BROKER, self.publisher.probe)
            for consumer in self.consumers:
                await self._probe(Dependency.BROKER, consumer.observe_lag)
            await asyncio.sleep(self.metrics_interval_s)

    async def _probe(self, dependency: Dependency, call: Callable[[], Awaitable[None]]) -> None:
        try:
            await asyncio.wait_for(call(), timeout=self.metrics_interval_s)
        except Exception as exc:  # noqa: BLE001 - a sample that failed says the dependency is away, and no more
            verdict = classify(exc, dependency=dependency)
            log.warning("could not sample %s (%s), will retry: %r", dependency, verdict.reason, exc)
            if verdict.kind is not Kind.FINAL:
                self.readiness.away(dependency, verdict.reason, f"{_PROBE} {dependency}")
            return
        self.readiness.back(dependency, f"{_PROBE} {dependency}")

    async def close(self) -> None:
        for part in (*(c.stop for c in self.consumers), self.publisher.stop, self.pool.close):
            try:
                await part()
            except Exception:  # a client that never connected, or lost its connection: stop the others all the same
                log.warning("%s: could not close a client cleanly", self.service, exc_info=True)
        log.info("%s stopped", self.service)


async def start_all(starts: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """Run every start at once and return when all are done; the first to fail cancels the others and is raised as
    itself."""
    started = [asyncio.ensure_future(start()) for start in starts]
    try:
        await asyncio.gather(*started)
    except BaseException:
        for task in started:
            task.cancel()
        await asyncio.gather(*started, return_exceptions=True)
        raise


async def _serving(served: asyncio.Event, listener: Coroutine[Any, Any, None]) -> None:
    """Run the HTTP `listener`, and set `served` once it stopped (its requests in flight answered) or failed."""
    try:
        await listener
    finally:
        served.set()


def _name(work: Coroutine[Any, Any, None]) -> str:
    return getattr(work, "__qualname__", repr(work))


async def _unless_stopping(running: "asyncio.Task[None]", stopping: asyncio.Event) -> bool:
    """Wait for `running` unless `stopping` is set first: then cancel it and return at once, not waiting for it to
    end (a consumer cancelled in the middle of a group join closes only once the broker answers the join);
    whether it ran to the end."""
    waiting = asyncio.create_task(stopping.wait())
    try:
        done, _ = await asyncio.wait([running, waiting], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        if not running.done():
            running.cancel()
    if running not in done:
        return False
    running.result()
    return True
