"""notifier entry point."""

import logging

from notifier.bootstrap import SERVICE, build
from notifier.config import Settings
from servicekit.logs import configure
from servicekit.runner import run

log = logging.getLogger(__name__)


async def main() -> None:
    settings = Settings()
    configure(settings.log_level, SERVICE)
    if not settings.webhook_url:
        log.warning("NOTIFIER_WEBHOOK_URL is not set: no platform webhook, only users' devices and the inbox")
    notifier = await build(settings)
    await notifier.infra.run(notifier.app, notifier.worker.run(), notifier.feed.run())


def entry() -> None:
    run(main)
