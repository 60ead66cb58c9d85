"""reconciler entry point: a faust worker on uvloop, stopped cleanly by SIGTERM or SIGINT."""

import asyncio

import faust
import uvloop

from reconciler.bootstrap import build
from reconciler.config import Settings
from servicekit.kafka import ensure_topics
from servicekit.kafka_access import topics_to_ensure
from servicekit.kafka_security import aiokafka_security
from servicekit.logs import dict_config
from servicekit.secret_guard import refuse_development_secrets, shared_secrets

SERVICE = "reconciler"


def entry() -> None:
    settings = Settings()
    # Its pages read API keys from PostgreSQL: the database password and its Kafka password.
    refuse_development_secrets(SERVICE, settings, shared_secrets(settings))
    # faust's worker, its consumer's thread and every loop they make come from this policy.
    uvloop.install()
    asyncio.run(
        ensure_topics(
            settings.kafka_bootstrap,
            [t.qualified(settings.topic_prefix) for t in topics_to_ensure(SERVICE, settings)],
            settings.topic_partitions,
            security=aiokafka_security(settings),
        )
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = build(settings)
    # faust sets up logging itself, from servicekit's set-up: the same lines as every other service's.
    logging_config = dict_config(settings.log_level, SERVICE, settings.logs_as)
    worker = faust.Worker(
        app, loglevel=settings.log_level.lower(), logging_config=logging_config, workdir=str(settings.data_dir)
    )
    # faust's terminal spinner, kept at WARNING and above, sets the root logger to DEBUG so that every
    # debug record of aiokafka and faust is built and formatted (about a tenth of the worker's time
    # when it catches up); a service logging to a file has no terminal to spin on.
    worker.spinner = None
    worker.execute_from_commandline()
