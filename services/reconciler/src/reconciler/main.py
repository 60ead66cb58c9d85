"""reconciler entry point: a faust worker on uvloop, stopped cleanly by SIGTERM or SIGINT."""

import asyncio
import logging.config
from collections.abc import Awaitable, Callable

import faust
import uvloop

from contracts.topics import Topic
from reconciler.adapters.broker_watch import WATCHED, wait_for_broker
from reconciler.bootstrap import build
from reconciler.config import Settings
from servicekit.kafka import ensure_topics
from servicekit.kafka_access import topics_to_ensure
from servicekit.kafka_security import aiokafka_security
from servicekit.logs import dict_config
from servicekit.retrying import Readiness
from servicekit.runner import freeze_startup
from servicekit.secret_guard import refuse_development_secrets, shared_secrets
from servicekit.settings import read_settings

SERVICE = "reconciler"


def entry() -> None:
    settings = read_settings(Settings, SERVICE)
    # Its pages read API keys from PostgreSQL: the database password and its Kafka password; its workers vouch
    # for each other with the peer secret.
    secrets = {**shared_secrets(settings), "RECONCILER_PEER_SECRET": settings.peer_secret}
    refuse_development_secrets(SERVICE, settings, secrets)
    # faust's worker, its consumer's thread and every loop they make come from this policy.
    uvloop.install()
    # faust sets up logging itself, from servicekit's set-up: the same lines as every other service's.
    logging_config = dict_config(settings.log_level, SERVICE, settings.logs_as)
    logging.config.dictConfig(logging_config)  # until faust does: the wait for the broker logs too
    # faust cannot start without the broker: until it answers (and the topics exist), /healthz says 503.
    if not asyncio.run(
        wait_for_broker(settings.http_host, settings.http_port, Readiness(watched=WATCHED), topics(settings))
    ):
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = build(settings)
    worker = faust.Worker(
        app, loglevel=settings.log_level.lower(), logging_config=logging_config, workdir=str(settings.data_dir)
    )
    # faust's terminal spinner, kept at WARNING and above, sets the root logger to DEBUG so that every
    # debug record of aiokafka and faust is built and formatted (about a tenth of the worker's time
    # when it catches up); a service logging to a file has no terminal to spin on.
    worker.spinner = None
    freeze_startup()  # faust and the app are built; what the worker makes from now on is collected as usual
    worker.execute_from_commandline()


def topics(settings: Settings) -> Callable[[], Awaitable[None]]:
    """The reconciler's topics created where missing: its first call to the broker. The two it joins must have
    as many partitions as its table, or one order's payment and credit meet on no worker."""
    joined = {t.qualified(settings.topic_prefix) for t in (Topic.PAYMENTS_EVENTS, Topic.LEDGER_EVENTS)}

    async def ensure() -> None:
        wanted = [t.qualified(settings.topic_prefix) for t in topics_to_ensure(SERVICE, settings)]
        await ensure_topics(
            settings.kafka_bootstrap,
            wanted,
            settings.topic_partitions,
            security=aiokafka_security(settings),
            exact=joined,
        )

    return ensure
