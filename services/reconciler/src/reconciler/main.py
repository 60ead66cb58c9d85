"""reconciler entry point: a faust worker on uvloop, stopped cleanly by SIGTERM or SIGINT."""

import asyncio

import faust
import uvloop

from contracts.topics import Topic
from reconciler.bootstrap import build
from reconciler.config import Settings
from servicekit.kafka import ensure_topics


def entry() -> None:
    settings = Settings()
    # faust's worker, its consumer's thread and every loop they make come from this policy.
    uvloop.install()
    asyncio.run(
        ensure_topics(
            settings.kafka_bootstrap, [t.qualified(settings.topic_prefix) for t in Topic], settings.topic_partitions
        )
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = build(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), workdir=str(settings.data_dir))
    # faust's terminal spinner, kept at WARNING and above, sets the root logger to DEBUG so that every
    # debug record of aiokafka and faust is built and formatted (about a tenth of the worker's time
    # when it catches up); a service logging to a file has no terminal to spin on.
    worker.spinner = None
    worker.execute_from_commandline()
