"""notifier entry point."""

import logging

from notifier.bootstrap import SERVICE, build
from notifier.config import Settings
from servicekit.infrastructure import Finishing
from servicekit.logs import configure
from servicekit.runner import run
from servicekit.secret_guard import SecretValue, refuse_development_secrets, shared_secrets
from servicekit.settings import read_settings

log = logging.getLogger(__name__)


async def main() -> None:
    settings = read_settings(Settings, SERVICE)
    configure(settings.log_level, SERVICE, settings.logs_as)
    if not settings.webhook_url:
        log.warning("NOTIFIER_WEBHOOK_URL is not set: no platform webhook, only users' devices and the inbox")
    notifier = await build(settings, connect=False)
    worker = Finishing(notifier.worker.run(), notifier.worker.finish)  # in-flight deliveries end and are settled
    await notifier.infra.run(notifier.app, worker, notifier.feed.run(), notifier.retention.run())


def secrets(settings: Settings) -> dict[str, SecretValue]:
    """What the notifier must not run on in production: the shared secrets, the status-link secret (it checks
    status links) and the secret it signs the platform's webhook with."""
    return {**shared_secrets(settings, signs_status_links=True), "NOTIFIER_WEBHOOK_SECRET": settings.webhook_secret}


def entry() -> None:
    settings = read_settings(Settings, SERVICE)
    configure(settings.log_level, SERVICE, settings.logs_as)
    refuse_development_secrets(SERVICE, settings, secrets(settings))
    run(main)
