"""The infrastructure a service's composition root builds once: pool, publisher, outbox relay, consumers,
and the service's metrics registry with the credited_* metrics they report."""

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from contracts.topics import Topic
from servicekit.consumer import KafkaConsumerLoop
from servicekit.http import serve
from servicekit.kafka import BatchHandler, DeadLetterPublisher, KafkaPublisher, ensure_topics
from servicekit.kafka_access import topics_to_ensure
from servicekit.kafka_security import aiokafka_security, check_credentials
from servicekit.metrics import ServiceMetrics
from servicekit.outbox import OutboxRelay
from servicekit.postgres import TRANSIENT_DB, create_pool, migrate
from servicekit.runner import run_until_stopped
from servicekit.settings import ServiceSettings
from servicekit.uow import batch, savepoint

log = logging.getLogger(__name__)

_SAMPLING_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_DB, asyncpg.PostgresError, OSError, TimeoutError)


@dataclass
class Infrastructure:
    """Everything with a connection in it; built by `open`, released by `close`."""

    service: str
    settings: ServiceSettings
    pool: asyncpg.Pool
    publisher: KafkaPublisher
    relay: OutboxRelay
    metrics: ServiceMetrics
    consumers: list[KafkaConsumerLoop] = field(default_factory=list)
    metrics_interval_s: float = 5.0

    @property
    def registry(self) -> CollectorRegistry:
        """The service's Prometheus registry: /metrics serves it; services add their own metrics to it."""
        return self.metrics.registry

    @classmethod
    async def open(cls, service: str, settings: ServiceSettings, migrations: Path | None) -> "Infrastructure":
        security = aiokafka_security(settings)
        await check_credentials(settings, client_id=service)
        pool = await create_pool(settings.database_url, settings.db_schema)
        await migrate(pool, *([migrations] if migrations else []))
        await ensure_topics(
            settings.kafka_bootstrap,
            [t.qualified(settings.topic_prefix) for t in topics_to_ensure(service, settings)],
            settings.topic_partitions,
            security=security,
        )
        publisher = KafkaPublisher(
            settings.kafka_bootstrap,
            idempotence=settings.idempotent_producer,
            client_id=service,
            topic_prefix=settings.topic_prefix,
            tuning=settings.kafka_tuning,
            security=security,
        )
        await publisher.start()
        metrics = ServiceMetrics(service, CollectorRegistry(auto_describe=True))
        return cls(service, settings, pool, publisher, OutboxRelay(pool, publisher, metrics=metrics.outbox()), metrics)

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
                transient=(*TRANSIENT_DB, OSError, TimeoutError),
                batch_scope=lambda: batch(self.pool),
                message_scope=savepoint,
                metrics=self.metrics.consumer(group, [t.value for t in topics], self.settings.topic_prefix),
                security=aiokafka_security(self.settings),
            )
            for _ in range(members)
        ]
        self.consumers += loops
        return loops

    async def run(self, app: FastAPI, *extra: Coroutine[Any, Any, None]) -> None:
        """Serve HTTP, relay the outbox, consume and run `extra` tasks, until SIGTERM/SIGINT."""
        for consumer in self.consumers:
            await consumer.start()
        log.info("%s listening on http://%s:%d", self.service, self.settings.http_host, self.settings.http_port)
        await run_until_stopped(
            [
                serve(app, self.settings.http_host, self.settings.http_port),
                self.relay.run(),
                *(c.run() for c in self.consumers),
                self.observe(),
                *extra,
            ],
            on_stop=self.close,
        )

    async def observe(self) -> None:
        """Sample what is only known by asking (consumer lag, outbox backlog) into the metrics, until cancelled."""
        while True:
            try:
                for consumer in self.consumers:
                    await consumer.observe_lag()
                await self.relay.observe_backlog()
            except _SAMPLING_ERRORS as exc:
                log.warning("could not sample consumer lag or outbox backlog, will retry: %r", exc)
            await asyncio.sleep(self.metrics_interval_s)

    async def close(self) -> None:
        for consumer in self.consumers:
            await consumer.stop()
        await self.publisher.stop()
        await self.pool.close()
        log.info("%s stopped", self.service)
