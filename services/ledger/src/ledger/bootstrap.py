"""The composition root of the ledger: the only place that builds adapters."""

from functools import partial
from pathlib import Path

from fastapi import FastAPI

from contracts.commands import BlockCredit, GrantCompensation, RetryCredit
from contracts.events import PaymentSucceeded, RefundSucceeded
from contracts.topics import Topic
from ledger import handlers
from ledger.adapters.http import routes
from ledger.adapters.postgres import PostgresLedger
from ledger.config import Settings
from servicekit.http import create_app
from servicekit.identity import protect
from servicekit.infrastructure import Infrastructure
from servicekit.kafka import only

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
SERVICE = "ledger"


async def build(settings: Settings, *, connect: bool = True) -> tuple[Infrastructure, FastAPI]:
    """The service's parts; connected to PostgreSQL and the broker unless `connect` is False (then
    `Infrastructure.run` connects while /healthz already answers)."""
    infra = await Infrastructure.open(SERVICE, settings, MIGRATIONS, connect=connect)

    def uow() -> PostgresLedger:
        return PostgresLedger(
            infra.pool, producer=SERVICE, topic_prefix=settings.topic_prefix, on_commit=infra.relay.wake
        )

    faults = handlers.FaultPolicy(drop_credit_share=settings.fault_drop_credit_share)
    users = handlers.UserPolicy(register_on_first_credit=settings.register_on_first_credit)
    # Each poll of either consumer is one batch: its payment events or commands, decided and written set-based.
    handle = partial(handlers.handle_batch, uow=uow, faults=faults, users=users)
    infra.consume(
        "ledger.payments",
        [Topic.PAYMENTS_EVENTS],
        only({PaymentSucceeded, RefundSucceeded}, handle),
        members=settings.payments_consumers,
    )
    infra.consume(
        "ledger.commands", [Topic.LEDGER_COMMANDS], only({RetryCredit, BlockCredit, GrantCompensation}, handle)
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
    return infra, app
