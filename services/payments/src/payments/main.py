"""payments entry point."""

import logging

from payments.config import SECRET_PREFIX, Settings
from servicekit.logs import configure
from servicekit.runner import run
from servicekit.secret_guard import SecretValue, refuse_development_secrets, shared_secrets

log = logging.getLogger(__name__)


async def main() -> None:
    from payments.adapters.auditor import Auditor
    from payments.adapters.case_watch import CaseWatch
    from payments.bootstrap import SERVICE, build  # not in a supervisor of copies, which serves nothing
    from payments.queries import QueryWorker

    settings = Settings()
    configure(settings.log_level, SERVICE, settings.logs_as)
    if not settings.psp_secrets:
        log.warning("no provider secrets set (PAYMENTS_PSP_SECRET_<PROVIDER>): every callback will be refused")
    infra, app = await build(settings, connect=False)
    worker: QueryWorker = app.state.query_worker
    auditor: Auditor | None = app.state.auditor
    case_watch: CaseWatch = app.state.case_watch
    if auditor is None:
        log.warning(
            "the money audit is off: set PAYMENTS_AUDIT_LEDGER_URL and PAYMENTS_AUDIT_LEDGER_API_KEY (a key with"
            " audit:read: credited keys create --name payments-audit --scope audit:read)"
        )
    await infra.run(
        app, worker.run(), case_watch.run_periodically(), *([auditor.run_periodically()] if auditor else [])
    )


def secrets(settings: Settings) -> dict[str, SecretValue]:
    """What payments must not run on in production: the shared secrets, the status-link secret (it answers
    the status link of an order it takes) and every provider's callback secret, at least one."""
    providers: dict[str, SecretValue] = {
        f"{SECRET_PREFIX}{provider.upper()}": values for provider, values in settings.psp_secrets.items()
    }
    return {**shared_secrets(settings, signs_status_links=True), **(providers or {f"{SECRET_PREFIX}<PROVIDER>": None})}


def entry() -> None:
    settings = Settings()
    configure(settings.log_level, "payments", settings.logs_as)
    # Before the copies start, so a refusal is said once and nothing connects anywhere.
    refuse_development_secrets("payments", settings, secrets(settings))
    run(main, processes=settings.processes, address=(settings.http_host, settings.http_port))
