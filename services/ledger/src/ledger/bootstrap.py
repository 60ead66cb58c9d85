"""The composition root of the ledger: the only place that builds adapters."""

from functools import partial
from pathlib import Path

from fastapi import FastAPI

from contracts.commands import BlockCredit, GrantCompensation, RedriveCredit, RetryCredit
from contracts.events import PaymentSucceeded, RefundSucceeded
from contracts.topics import Topic
from ledger import handlers
from ledger.adapters.http import routes
from ledger.adapters.metrics import ParkingMetrics
from ledger.adapters.parking import DeadLetterRoute, ParkedRetrySweeper
from ledger.adapters.postgres import PostgresLedger
from ledger.config import Settings
from servicekit.http import create_app
from servicekit.identity import protect
from servicekit.infrastructure import Infrastructure
from servicekit.kafka import only
from servicekit.metrics import DeadLetterKind

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
SERVICE = "ledger"


async def build(settings: Settings, *, connect: bool = True) -> tuple[Infrastructure, FastAPI]:
    """The service's parts; connected to PostgreSQL and the broker unless `connect` is False (then
    `Infrastructure.run` connects while /healthz already answers)."""
    infra = await Infrastructure.open(SERVICE, settings, MIGRATIONS, connect=connect)

    uow = infra.outbox_writers(PostgresLedger)
    faults = handlers.FaultPolicy(drop_credit_share=settings.fault_drop_credit_share)
    users = handlers.UserPolicy(register_on_first_credit=settings.register_on_first_credit)
    parking = ParkingMetrics(infra.registry, SERVICE)
    # Each poll of either consumer is one batch: its payment events or commands, decided and written set-based.
    handle = partial(handlers.handle_batch, uow=uow, faults=faults, users=users, parking=parking.count)
    locks = partial(handlers.lock_orders, uow=uow)  # a failed poll's orders, before it is retried one at a time
    infra.consume(
        "ledger.payments",
        [Topic.PAYMENTS_EVENTS],
        only({PaymentSucceeded, RefundSucceeded}, handle, lock_orders=locks),
        members=settings.payments_consumers,
    )
    # The group named as a literal where it is consumed: the contracts catalogue test reads it from this call.
    # One group for both command topics: a person's re-drive (ledger.redrives, only payments writes it) and the
    # reconciler's and support's other commands; each type is obeyed only from the topic the catalogue gives it.
    infra.consume(
        "ledger.commands",
        [Topic.LEDGER_COMMANDS, Topic.LEDGER_REDRIVES],
        only({RetryCredit, RedriveCredit, BlockCredit, GrantCompensation}, handle, lock_orders=locks),
    )
    commands = "ledger.commands"
    topics = [Topic.LEDGER_COMMANDS.value, Topic.LEDGER_REDRIVES.value]
    rejections = infra.metrics.consumer(commands, topics, settings.topic_prefix)

    def expired(n: int) -> None:
        parking.count("expired", n)
        for _ in range(n):
            rejections.dead_lettered(DeadLetterKind.REJECTED, handlers.NO_PAYMENT_FACT)

    route = DeadLetterRoute(
        dead_letter_topic=Topic.DEAD_LETTER.qualified(settings.topic_prefix),
        source_topic=Topic.LEDGER_COMMANDS.qualified(settings.topic_prefix),
        consumer_group=f"{settings.topic_prefix}{commands}",
        events_topic=Topic.LEDGER_EVENTS.qualified(settings.topic_prefix),
        producer=SERVICE,
    )
    app = create_app(
        title="credited ledger",
        version="1",
        registry=infra.registry,
        readiness=infra.readiness,
        max_body_bytes=settings.max_body_bytes,
    )
    protect(app, infra.authenticator)
    app.include_router(routes(uow))
    # Started by main with the relay and the consumers: Infrastructure.run(app, sweeper.run()).
    app.state.parked_retry_sweeper = ParkedRetrySweeper(
        infra.pool,
        route,
        park_s=settings.retry_park_s,
        interval_s=min(max(settings.retry_park_s / 10, 0.2), 15.0),
        on_commit=infra.relay.wake,
        rejected=expired,
    )
    return infra, app
