"""ledger entry point."""

import logging

from ledger.adapters.parking import ParkedRetrySweeper
from ledger.bootstrap import SERVICE, build
from ledger.config import Settings
from servicekit.logs import configure
from servicekit.runner import run
from servicekit.secret_guard import SecretValue, refuse_development_secrets, shared_secrets
from servicekit.settings import read_settings

log = logging.getLogger(__name__)


async def main() -> None:
    settings = read_settings(Settings, SERVICE)
    configure(settings.log_level, SERVICE, settings.logs_as)
    if settings.fault_drop_credit_share > 0:
        log.warning(
            "fault injection on: dropping the credit of %.1f%% of orders", settings.fault_drop_credit_share * 100
        )
    infra, app = await build(settings, connect=False)
    sweeper: ParkedRetrySweeper = app.state.parked_retry_sweeper
    await infra.run(app, sweeper.run())


def secrets(settings: Settings) -> dict[str, SecretValue]:
    """What the ledger must not run on in production: its database's password and its Kafka password."""
    return shared_secrets(settings)


def entry() -> None:
    settings = read_settings(Settings, SERVICE)
    configure(settings.log_level, SERVICE, settings.logs_as)
    refuse_development_secrets(SERVICE, settings, secrets(settings))
    run(main)
