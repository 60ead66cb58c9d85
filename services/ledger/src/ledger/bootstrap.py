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
from servicekit.infrastructure import Infrastructure
from servicekit.kafka import route

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
SERVICE = "ledger"


async def build(settings: Settings) -> tuple[Infrastructure, FastAPI]:
    infra = await Infrastructure.open(SERVICE, settings, MIGRATIONS)

    def uow() -> PostgresLedger:
        return PostgresLedger(
            infra.pool, producer=SERVICE, topic_prefix=settings.topic_prefix, on_commit=infra.relay.wake
        )

    faults = handlers.FaultPolicy(drop_credit_share=settings.fault_drop_credit_share)
    users = handlers.UserPolicy(register_on_first_credit=settings.register_on_first_credit)
    infra.consume(
        "ledger.payments",
        [Topic.PAYMENTS_EVENTS],
        route(
            {
                PaymentSucceeded: partial(handlers.handle_payment_succeeded, uow=uow, faults=faults, users=users),
                RefundSucceeded: partial(handlers.handle_refund_succeeded, uow=uow),
            }
        ),
    )
    infra.consume(
        "ledger.commands",
        [Topic.LEDGER_COMMANDS],
        route(
            {
                RetryCredit: partial(handlers.handle_retry_credit, uow=uow, users=users),
                BlockCredit: partial(handlers.handle_block_credit, uow=uow),
                GrantCompensation: partial(handlers.handle_grant_compensation, uow=uow),
            }
        ),
    )
    app = create_app(title="credited ledger", version="1", registry=infra.registry)
    app.include_router(routes(uow))
    return infra, app
