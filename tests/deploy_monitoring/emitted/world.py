"""One instance of each service, each with its registry built the way its composition root builds it, and
scraped under the job and target deploy/prometheus/prometheus.yml gives it.

What flows between them follows the pipeline: payments takes an order and its paid callback and publishes
the payment through its outbox; the ledger consumes it and credits (or not, as the scenario says); the
reconciler's real engine joins both and remediates; payments applies each status the reconciler announces
and the notifier delivers it through its real delivery worker.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from prometheus_client import CollectorRegistry

from contracts.catalog import CATALOG
from ledger.adapters.metrics import ParkingMetrics
from payments.adapters.auditor import AuditMetrics
from payments.adapters.metrics import PrometheusPaymentsMetrics, SupportCaseMetrics
from payments.audit import Credit, PaidOrder, Refund, compare
from payments.auditing import AuditOutcome, AuditWindow
from payments.config import Settings as PaymentsSettings
from payments.domain import Outcome, PaymentState
from reconciler.domain import Policy
from servicekit.metrics import ConsumerMetrics, DeadLetterKind, OutboxMetrics, ServiceMetrics
from servicekit.retrying import Readiness
from tests.deploy_monitoring.conftest import PROMETHEUS_DIR, load_yaml
from tests.deploy_monitoring.emitted.cases import Cases
from tests.deploy_monitoring.emitted.commands import Commands
from tests.deploy_monitoring.emitted.notifier import Notifier
from tests.deploy_monitoring.emitted.reconciler import Ledger, Reconciler
from tests.deploy_monitoring.emitted.scrape import Target, Timeline

KIT_SERVICES = ("payments", "ledger", "notifier")
"""The services built on servicekit's Infrastructure (the reconciler runs faust and has no credited_* metrics)."""

PAYMENT_CHANNELS = sorted(PaymentsSettings.model_fields["metric_channels"].default)
PROVIDERS = ["sim", "alipay", "wechatpay"]


def consumer_groups() -> dict[tuple[str, str], list[str]]:
    """(service, group) -> the topics the group reads, for the kit services, by the contracts catalogue: one
    group may read several topics (the ledger's ledger.commands reads ledger.commands and ledger.redrives)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for spec in CATALOG:
        for reader in spec.readers:
            if reader.service in KIT_SERVICES:
                groups.setdefault((reader.service, reader.group), []).append(spec.topic.value)
    return groups


def scrape_targets() -> dict[str, str]:
    """job -> the one target the local prometheus.yml scrapes for it."""
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    return {job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]}


@dataclass
class Kit:
    """A service's credited_* metrics and the consumers and outbox relay that report into them."""

    metrics: ServiceMetrics
    consumers: dict[str, ConsumerMetrics] = field(default_factory=dict)
    readiness: Readiness = field(init=False)

    def __post_init__(self) -> None:
        # As Infrastructure.open wires them: the dependencies its retry loops and probes find away, in its metrics.
        self.readiness = Readiness(on_change=self.metrics.dependency)

    @property
    def outbox(self) -> OutboxMetrics:
        return self.metrics.outbox()


class World:
    """The four services of one stack, their registries, and a timeline of their scrapes."""

    def __init__(
        self,
        start: datetime,
        policy: Policy,
        *,
        ledger: Callable[[str], Ledger] = lambda _: Ledger.CREDITS,
        refunds: Callable[[str], bool] = lambda _: True,
        notifier: Notifier | None = None,
    ) -> None:
        registries = {job: CollectorRegistry(auto_describe=True) for job in scrape_targets()}
        self.targets = {job: Target(job, target, registries[job]) for job, target in scrape_targets().items()}
        self.kits = {name: Kit(ServiceMetrics(name, registries[name])) for name in KIT_SERVICES}
        self.lags: dict[tuple[str, str], dict[tuple[str, int], int]] = {}
        self.outbox_ages = dict.fromkeys(KIT_SERVICES, 0.0)
        for (service, group), topics in consumer_groups().items():
            kit = self.kits[service]
            kit.consumers[group] = kit.metrics.consumer(group, topics)
            self.lags[(service, group)] = {(topic, 0): 0 for topic in topics}
        self.payments = PrometheusPaymentsMetrics(
            registries["payments"], channels=PAYMENT_CHANNELS, providers=PROVIDERS
        )
        self.audits = AuditMetrics(registries["payments"])
        self.cases = Cases(SupportCaseMetrics(registries["payments"]))
        self.commands = Commands(
            self.kits["ledger"].consumers["ledger.commands"],
            ParkingMetrics(registries["ledger"], "ledger"),
            self.kits["payments"].consumers["payments.commands"],
        )
        self.reconciler = Reconciler(registries["reconciler"], policy, start, ledger=ledger, refunds=refunds)
        self.notifier = notifier or Notifier()
        self.notifier.attach(registries["notifier"])
        self.timeline = Timeline(list(self.targets.values()))
        self.reconciler_follows = True
        self.behind_s = 0.0
        self._statuses_seen = 0
        self._waiting: list[Callable[[], Awaitable[None]]] = []  # published, not yet read by the reconciler

    async def pay(
        self,
        order_id: str,
        channel: str,
        *,
        credit: bool,
        provider: str = "sim",
        by_query: bool = False,
        clamped: bool = False,
        paid_ago_s: float = 0.0,
    ) -> None:
        """An order placed and paid through `provider`; the ledger credits it at once when `credit`, else never
        by itself. With `by_query` the provider's callback was lost and payments' query found the payment; with
        `clamped` the provider's paid_at was too far from its arrival and payments clamped it. The user paid
        `paid_ago_s` before payments published the payment (a query finds a lost callback's payment late)."""
        kit = self.kits["payments"].metrics
        self.payments.order_created(channel)
        kit.http_request("/v1/orders", "POST", 201, 0.004)
        if clamped:
            self.payments.clamped(provider)
        if by_query:
            self.payments.answered(provider, PaymentState.PAID)
            self.payments.recovered(provider, channel)
        else:
            self.payments.callback(provider, Outcome.PAID)
            kit.http_request("/v1/psp/{provider}/callbacks", "POST", 200, 0.006)
        self.kits["payments"].outbox.published(2)  # OrderPlaced, PaymentSucceeded
        self.kits["ledger"].consumers["ledger.payments"].consumed("payments.events", 2)
        self._waiting.append(partial(self.reconciler.pay, order_id, channel, ago_s=paid_ago_s))
        if credit:
            self.kits["ledger"].outbox.published(1)
            self._waiting.append(partial(self.reconciler.credit, order_id))

    def unanswered(self, channel: str, provider: str) -> None:
        """An order placed through `provider` whose callback never comes, and payments' query of it has no answer
        (a timeout, a server error): it stays unpaid to payments, and is asked again later."""
        self.payments.order_created(channel)
        self.kits["payments"].metrics.http_request("/v1/orders", "POST", 201, 0.004)
        self.kits["payments"].outbox.published(1)  # OrderPlaced
        self.payments.answered(provider, PaymentState.UNKNOWN)

    async def credit_without_payment(self, order_id: str) -> None:
        """The ledger posts a credit for an order payments never announced paid."""
        self.kits["ledger"].outbox.published(1)
        self._waiting.append(partial(self.reconciler.credit, order_id))

    def audit(self, now: datetime, *, lost: int = 0, credited_twice: int = 0, refund_failed: int = 0) -> None:
        """Payments' money audit runs over the last day: of the ten paid orders it sees, the first `lost` have no
        credit (it re-drives them), the next `refund_failed` have none and a refund the provider refused, and the
        last `credited_twice` have two; compare (the real one) judges."""
        window = AuditWindow(now - timedelta(days=1), now, now, timedelta(minutes=3))
        paid = [PaidOrder(f"ord-audit-{n}", "u", 600, "CNY", now - timedelta(hours=1)) for n in range(10)]
        uncredited = lost + refund_failed
        credits = [Credit(o.order_id, "u", 600, "CNY", f"txn-{o.order_id}") for o in paid[uncredited:]]
        credits += [Credit(o.order_id, "u", 600, "CNY", f"again-{o.order_id}") for o in paid[10 - credited_twice :]]
        refunds = [Refund(o.order_id, 600, "CNY", succeeded=False) for o in paid[lost:uncredited]]
        report = compare(paid, credits, refunds, now=now, grace=window.grace)
        self.audits.ran("schedule", AuditOutcome(window, report, report.to_redrive()), now)

    def audit_fails(self) -> None:
        """A scheduled audit that could not finish (the ledger or the database away): counted, nothing shown."""
        self.audits.runs.labels("schedule", "failed").inc()

    async def settle(self, now: datetime) -> None:
        """Time passes to `now`: the reconciler reads what it follows and ticks, payments and the notifier
        take up the statuses it announced; then Prometheus scrapes."""
        if self.reconciler_follows:
            self.reconciler.clock.at = now
            waiting, self._waiting = self._waiting, []
            for read in waiting:
                await read()
        await self.reconciler.step(now, behind_s=self.behind_s)
        await self._follow_statuses(now)
        self.cases.watch(now)
        self._sample()
        self.timeline.record()

    def _sample(self) -> None:
        """What each kit service samples every few seconds (Infrastructure.observe): every consumer's lag
        and the outbox backlog, set by the scenario or nothing waiting."""
        for (service, group), lags in self.lags.items():
            self.kits[service].consumers[group].lag(lags)
        for service, age in self.outbox_ages.items():
            self.kits[service].outbox.backlog(int(age // 10), age)

    async def _follow_statuses(self, now: datetime) -> None:
        statuses = self.reconciler.announced.statuses[self._statuses_seen :]
        self._statuses_seen += len(statuses)
        self.kits["payments"].consumers["payments.order-status"].consumed("orders.status", len(statuses))
        self.kits["notifier"].consumers["notifier.order-status"].consumed("orders.status", len(statuses))
        for _, change in statuses:
            self.payments.status_changed(change.status)
        await self.notifier.notify([(state.order_id, change.status) for state, change in statuses], now)

    def dead_letter(self, service: str, group: str, kind: DeadLetterKind) -> None:
        self.kits[service].consumers[group].dead_lettered(kind)
