"""reconciler entry point: a faust worker, stopped cleanly by SIGTERM or SIGINT."""

import asyncio

import faust

from contracts.topics import Topic
from reconciler.bootstrap import build
from reconciler.config import Settings
from servicekit.kafka import ensure_topics


def entry() -> None:
    settings = Settings()
    asyncio.run(
        ensure_topics(
            settings.kafka_bootstrap, [t.qualified(settings.topic_prefix) for t in Topic], settings.topic_partitions
        )
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = build(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), workdir=str(settings.data_dir))
    worker.execute_from_commandline()
