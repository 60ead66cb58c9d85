"""The infrastructure a service's composition root builds once: pool, publisher, outbox relay, consumers."""

import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from contracts.topics import Topic
from servicekit.http import serve
from servicekit.kafka import DeadLetterPublisher, Handler, KafkaConsumerLoop, KafkaPublisher, ensure_topics
from servicekit.outbox import OutboxRelay
from servicekit.postgres import TRANSIENT_DB, create_pool, migrate
from servicekit.runner import run_until_stopped
from servicekit.settings import ServiceSettings

log = logging.getLogger(__name__)


@dataclass
class Infrastructure:
    """Everything with a connection in it; built by `open`, released by `close`."""

    service: str
    settings: ServiceSettings
    pool: asyncpg.Pool
    publisher: KafkaPublisher
    relay: OutboxRelay
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))
    consumers: list[KafkaConsumerLoop] = field(default_factory=list)

    @classmethod
    async def open(cls, service: str, settings: ServiceSettings, migrations: Path | None) -> "Infrastructure":
        pool = await create_pool(settings.database_url, settings.db_schema)
        await migrate(pool, *([migrations] if migrations else []))
        await ensure_topics(
            settings.kafka_bootstrap, [t.qualified(settings.topic_prefix) for t in Topic], settings.topic_partitions
        )
        publisher = KafkaPublisher(
            settings.kafka_bootstrap,
            idempotence=settings.idempotent_producer,
            client_id=service,
            topic_prefix=settings.topic_prefix,
        )
        await publisher.start()
        return cls(service, settings, pool, publisher, OutboxRelay(pool, publisher))

    def consume(self, group: str, topics: Sequence[Topic], handler: Handler) -> KafkaConsumerLoop:
        loop = KafkaConsumerLoop(
            bootstrap=self.settings.kafka_bootstrap,
            group_id=f"{self.settings.topic_prefix}{group}",
            topics=[t.qualified(self.settings.topic_prefix) for t in topics],
            handler=handler,
            dead_letters=DeadLetterPublisher(self.publisher),
            transient=(*TRANSIENT_DB, OSError, TimeoutError),
        )
        self.consumers.append(loop)
        return loop

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
                *extra,
            ],
            on_stop=self.close,
        )

    async def close(self) -> None:
        for consumer in self.consumers:
            await consumer.stop()
        await self.publisher.stop()
        await self.pool.close()
        log.info("%s stopped", self.service)
