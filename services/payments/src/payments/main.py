"""payments entry point."""

import logging

from payments.config import SECRET_PREFIX, Settings
from servicekit.logs import configure
from servicekit.runner import run
from servicekit.secret_guard import SecretValue, UnsafeSecrets, problems, refuse_development_secrets, shared_secrets
from servicekit.settings import read_settings

log = logging.getLogger(__name__)


async def main() -> None:
    from payments.adapters.auditor import Auditor
    from payments.adapters.case_watch import CaseWatch
    from payments.bootstrap import SERVICE, build  # not in a supervisor of copies, which serves nothing
    from payments.queries import QueryWorker
    from payments.refunds import RefundFollowUp
    from servicekit.retention import Retention

    settings = read_settings(Settings, "payments")
    configure(settings.log_level, SERVICE, settings.logs_as)
    if not settings.simulated_providers and not settings.real_providers:
        log.warning(
            "no payment provider configured (PAYMENTS_WECHATPAY_*, PAYMENTS_ALIPAY_*, or in development"
            " PAYMENTS_PSP_SECRET_<NAME>): every callback will be refused"
        )
    infra, app = await build(settings, connect=False)
    worker: QueryWorker = app.state.query_worker
    follow_up: RefundFollowUp = app.state.refund_follow_up
    auditor: Auditor | None = app.state.auditor
    case_watch: CaseWatch = app.state.case_watch
    retention: Retention = app.state.retention
    if auditor is None:
        log.warning(
            "the money audit is off: set PAYMENTS_AUDIT_LEDGER_URL and PAYMENTS_AUDIT_LEDGER_API_KEY (a key with"
            " audit:read: credited keys create --name payments-audit --scope audit:read)"
        )
    periodic = [worker.run(), follow_up.run(), case_watch.run_periodically(), retention.run()]
    await infra.run(app, *periodic, *([auditor.run_periodically()] if auditor else []))


def secrets(settings: Settings) -> dict[str, SecretValue]:
    """What payments must not run on in production: the shared secrets, the status-link secret (it answers
    the status link of an order it takes) and every simulated provider's callback secret."""
    simulated: dict[str, SecretValue] = {
        f"{SECRET_PREFIX}{provider.upper()}": values for provider, values in settings.psp_secrets.items()
    }
    return {**shared_secrets(settings, signs_status_links=True), **simulated}


def provider_problems(settings: Settings) -> list[str]:
    """Why payments' providers are not fit for production: a simulated provider's secret is set (whoever holds it
    marks any order paid, and its refunds reach nobody), or no real provider is configured. None in development."""
    if settings.environment == "development":
        return []
    found = [
        f"{SECRET_PREFIX}{name.upper()} is set, but the simulated provider it signs for runs only in development"
        for name in sorted(settings.psp_secrets)
    ]
    if not settings.real_providers:
        found.append("no real payment provider is configured (WeChat Pay or Alipay)")
    return found


def refuse_unsafe_start(settings: Settings) -> None:
    """Stop payments (UnsafeSecrets) on a development secret, as servicekit's refuse_development_secrets does, and,
    outside development, on a simulated provider or on no real provider, saying what to configure instead."""
    unsafe = provider_problems(settings)
    if unsafe:
        weak = problems(secrets(settings))
        advice = "Set each secret from your secret store; unset" if weak else "Unset"
        raise UnsafeSecrets(
            f"payments refuses to start in production: {'; '.join(weak + unsafe)}. {advice} every {SECRET_PREFIX}"
            "<NAME> and configure WeChat Pay (PAYMENTS_WECHATPAY_MCHID and its keys) or Alipay (PAYMENTS_ALIPAY_APP_ID"
            " and its keys) (or CREDITED_ENV=development on a laptop)."
        )
    refuse_development_secrets("payments", settings, secrets(settings))


def entry() -> None:
    settings = read_settings(Settings, "payments")
    configure(settings.log_level, "payments", settings.logs_as)
    # Before the copies start, so a refusal is said once and nothing connects anywhere.
    refuse_unsafe_start(settings)
    address = (settings.http_host, settings.http_port)
    run(main, processes=settings.processes, address=address, stop_grace_s=settings.stop_grace_s)
