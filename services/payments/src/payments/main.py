"""payments entry point."""

import logging

from payments.config import Settings
from servicekit.logs import configure
from servicekit.runner import run

log = logging.getLogger(__name__)


async def main() -> None:
    from payments.bootstrap import SERVICE, build  # not in a supervisor of copies, which serves nothing

    settings = Settings()
    configure(settings.log_level, SERVICE)
    if not settings.psp_secrets:
        log.warning("no provider secrets set (PAYMENTS_PSP_SECRET_<PROVIDER>): every callback will be refused")
    infra, app = await build(settings)
    await infra.run(app)


def entry() -> None:
    settings = Settings()
    run(main, processes=settings.processes, address=(settings.http_host, settings.http_port))
