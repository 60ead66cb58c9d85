"""ledger entry point."""

import logging

from ledger.bootstrap import SERVICE, build
from ledger.config import Settings
from servicekit.logs import configure
from servicekit.runner import run

log = logging.getLogger(__name__)


async def main() -> None:
    settings = Settings()
    configure(settings.log_level, SERVICE)
    if settings.fault_drop_credit_share > 0:
        log.warning(
            "fault injection on: dropping the credit of %.1f%% of orders", settings.fault_drop_credit_share * 100
        )
    infra, app = await build(settings)
    await infra.run(app)


def entry() -> None:
    run(main)
