"""The situations the alerts are about, played step by step on a World of the services' real metrics code.

Each step: what happens (orders paid, credits dropped, a target down...), then time passes to the step's
end (the reconciler ticks, the others answer) and Prometheus scrapes every target. A promtool test names
a scenario; its input series are these scrapes, one value per step (`interval_s` apart).
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache

from contracts.events import CaseKind, CaseSeverity
from contracts.topics import Topic
from notifier.adapters.delivery import RetryPolicy
from notifier.ports import DeliveryFailed
from payments.domain import PaymentStatus
from reconciler.domain import Policy
from servicekit.errors import Dependency
from servicekit.metrics import DeadLetterKind
from tests.deploy_monitoring.emitted.commands import PAID
from tests.deploy_monitoring.emitted.notifier import Notifier
from tests.deploy_monitoring.emitted.reconciler import Ledger
from tests.deploy_monitoring.emitted.scrape import Timeline
from tests.deploy_monitoring.emitted.world import World

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""Where promtool's clock starts: a timestamp a rule compares with time() is taken on it."""
Step = Callable[[World, int], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    interval_s: int
    steps: int
    step: Step
    world: Callable[[], World]


def world(
    threshold_s: float = 30,
    *,
    ledger: Callable[[str], Ledger] = lambda _: Ledger.CREDITS,
    refunds: Callable[[str], bool] = lambda _: True,
    notifier: Callable[[], Notifier] = Notifier,
) -> Callable[[], World]:
    # A settled order leaves the table a minute (event time) after it settled, as the retention drops it.
    policy = Policy(threshold_s=threshold_s, retry_attempts=2, retry_backoff_s=5, retention_s=60)
    return lambda: World(T0, policy, ledger=ledger, refunds=refunds, notifier=notifier())


async def orders(w: World, step: int, channel: str, count: int, *, dropped: int = 0, tag: str = "") -> None:
    """`count` orders paid on `channel`; the ledger drops the credit of the first `dropped` of them."""
    for n in range(count):
        await w.pay(f"ord-{channel}-{step}-{n}{tag}", channel, credit=n >= dropped)


def fate(order_id: str) -> str:
    """What a scenario has in store for an order: the tag after the `.` in its id."""
    return order_id.partition(".")[2]


def index(order_id: str) -> int:
    """The order's number within its step (ord-<channel>-<step>-<n>)."""
    return int(order_id.partition(".")[0].rsplit("-", 1)[1])


async def play(scenario: Scenario) -> Timeline:
    w = scenario.world()
    try:
        for i in range(scenario.steps):
            now = T0 + timedelta(seconds=i * scenario.interval_s)
            w.reconciler.clock.at = now
            await scenario.step(w, i)
            await w.settle(now)
    finally:
        await w.notifier.stop()
    return w.timeline


# --- orders: credits dropped, orders stuck, remediation, the reconciler falling behind, channels ---


async def dropped_then_credited_by_retry(w: World, i: int) -> None:
    await orders(w, i, "card", 3, dropped=1 if 4 <= i <= 15 else 0)


async def stuck_while_the_ledger_is_down(w: World, i: int) -> None:
    await orders(w, i, "card", 2, dropped=2 if i == 4 else 0, tag=".down" if i == 4 else "")


async def on_time(w: World, i: int) -> None:
    await orders(w, i, "card", 3)


async def refunded_then_escalated(w: World, i: int) -> None:
    await orders(w, i, "card", 5)
    if i == 8:
        await orders(w, i, "alipay", 2, dropped=2, tag=".refused")
    if i == 13:
        await orders(w, i, "alipay", 1, dropped=1, tag=".unrefundable")


def remediation_ledger(order_id: str) -> Ledger:
    return Ledger.REFUSES_FOR_NOW if fate(order_id) in ("refused", "unrefundable") else Ledger.CREDITS


async def reconciler_stops_reading(w: World, i: int) -> None:
    await orders(w, i, "card", 5)
    if i >= 5:
        w.reconciler_follows = False
        w.behind_s = 60.0 * (i - 4)


async def reconciler_far_behind(w: World, i: int) -> None:
    await orders(w, i, "card", 5)
    w.behind_s = 400.0 if i >= 5 else 1.0


async def busy_then_idle(w: World, i: int) -> None:
    if i < 16:
        await orders(w, i, "card", 5)


async def one_channel_delays(w: World, i: int) -> None:
    await orders(w, i, "card", 10, dropped=1)
    await orders(w, i, "alipay", 10, dropped=1 if i % 5 == 0 else 0)
    await orders(w, i, "carrier", 1, dropped=1 if i % 2 == 0 else 0)


async def one_provider_loses_callbacks(w: World, i: int) -> None:
    """Alipay's callbacks stop arriving for half its payments from minute 5 to 20 (payments' queries find
    them paid); one WeChat Pay callback in sixteen is lost all along, the ordinary trickle."""
    for n in range(4):
        lost = 5 <= i <= 20 and n < 2
        await w.pay(f"ord-alipay-{i}-{n}", "alipay", credit=True, provider="alipay", by_query=lost)
        lost = i % 4 == 0 and n == 0
        await w.pay(f"ord-wechat-{i}-{n}", "wechat", credit=True, provider="wechatpay", by_query=lost)


async def payments_found_past_their_deadline(w: World, i: int) -> None:
    """Card orders are credited in time all along. From minute 5 to 8 one Alipay payment a minute reaches payments
    only through its query, 45 s after the user paid (its callback lost; within the scenarios' 60 s retention,
    past which the reconciler would ignore it): past the 30 s threshold when it is published, so the reconciler
    flags it at its next tick, and the ledger's credit of it lands a moment later (here: the ledger's answer to the
    first RetryCredit)."""
    await orders(w, i, "card", 3)
    if 5 <= i <= 8:
        await w.pay(f"ord-alipay-{i}-0", "alipay", credit=False, provider="alipay", by_query=True, paid_ago_s=45)


async def one_provider_unreachable(w: World, i: int) -> None:
    """From minute 5 Alipay neither calls back nor answers payments' queries (each query times out): its orders stay
    unpaid to payments. WeChat Pay works all along."""
    for n in range(4):
        if i >= 5:
            w.unanswered("alipay", "alipay")
        else:
            await w.pay(f"ord-alipay-{i}-{n}", "alipay", credit=True, provider="alipay")
        await w.pay(f"ord-wechat-{i}-{n}", "wechat", credit=True, provider="wechatpay")


async def one_provider_clock_ahead(w: World, i: int) -> None:
    """From minute 5 Alipay dates every payment an hour ahead (its clock, or a time zone read wrong); WeChat Pay
    dates one payment in ten ahead once, at minute 12 (a glitch)."""
    for n in range(4):
        await w.pay(f"ord-alipay-{i}-{n}", "alipay", credit=True, provider="alipay", clamped=i >= 5)
        glitch = i == 12 and n == 0
        await w.pay(f"ord-wechat-{i}-{n}", "wechat", credit=True, provider="wechatpay", clamped=glitch)


async def credit_without_payment(w: World, i: int) -> None:
    await orders(w, i, "card", 3)
    if i == 5:
        await w.credit_without_payment("ord-ghost")


async def credit_before_payment(w: World, i: int) -> None:
    await orders(w, i, "card", 3)
    if i == 5:
        await w.credit_without_payment("ord-early")
    if i == 6:
        await w.pay("ord-early", "card", credit=False)


# --- the credit SLO ---


def slo(per_step: int, dropped_every: int, dropped: int = 1) -> Step:
    async def step(w: World, i: int) -> None:
        await orders(w, i, "card", per_step, dropped=dropped if i % dropped_every == 0 else 0)

    return step


def low_traffic(drops_at: tuple[int, ...]) -> Step:
    async def step(w: World, i: int) -> None:
        await orders(w, i, "card", 1, dropped=1 if i in drops_at else 0)

    return step


# --- the platform: targets, consumers, outboxes, dead letters, deliveries ---


async def payments_down_reconciler_missing(w: World, i: int) -> None:
    await orders(w, i, "card", 2)
    w.targets["reconciler"].discovered = False
    w.targets["payments"].up = i < 5


def database_away(service: str, source: str, since: int, until: int) -> Step:
    """`service`'s PostgreSQL is away from minute `since` to `until`, as its retry loop (`source`) finds: the process
    answers its scrapes all the while."""

    async def step(w: World, i: int) -> None:
        await orders(w, i, "card", 2)
        readiness = w.kits[service].readiness
        if i == since:
            readiness.away(Dependency.DATABASE, "connection refused", source)
        if i == until:
            readiness.back(Dependency.DATABASE, source)

    return step


async def notifier_blips(w: World, i: int) -> None:
    await orders(w, i, "card", 2)
    w.targets["notifier"].up = i != 1


def lagging(lags: list[tuple[int, int]]) -> Step:
    async def step(w: World, i: int) -> None:
        await orders(w, i, "card", 2)
        p0, p1 = lags[min(i, len(lags) - 1)]
        w.lags[("ledger", "ledger.payments")] = {("payments.events", 0): p0, ("payments.events", 1): p1}

    return step


def outbox_ages(ages: list[float], service: str = "payments") -> Step:
    async def step(w: World, i: int) -> None:
        await orders(w, i, "card", 2)
        w.outbox_ages[service] = ages[min(i, len(ages) - 1)]

    return step


async def one_record_dead_lettered(w: World, i: int) -> None:
    await orders(w, i, "card", 2)
    if i == 5:
        w.dead_letter("ledger", "ledger.payments", DeadLetterKind.UNDECODABLE)
        w.reconciler.observe.dead_letters.labels("undecodable").inc()  # what its rounds count, by their own metric


async def twelve_orders(w: World, i: int) -> None:
    await orders(w, i, "card", 12)


def webhook_failing(order_id: str, attempts: int) -> DeliveryFailed | None:
    """One order in six refused for good (HTTP 400), one in six refused once (HTTP 503) then taken."""
    if index(order_id) % 6 == 0:
        return DeliveryFailed("HTTP 400", retry=False)
    if index(order_id) % 6 == 1 and attempts == 1:
        return DeliveryFailed("HTTP 503", retry=True)
    return None


def push_subscription_gone(order_id: str, attempts: int) -> DeliveryFailed | None:
    """Now and then a device has unsubscribed (HTTP 410)."""
    return DeliveryFailed("HTTP 410", retry=False, gone=True) if index(order_id) == 11 else None


def webhook_busy_once(order_id: str, attempts: int) -> DeliveryFailed | None:
    return DeliveryFailed("HTTP 503", retry=True) if attempts == 1 else None


def webhook_down_from_minute_5(order_id: str, attempts: int) -> DeliveryFailed | None:
    """The platform's webhook answers 503 to every delivery of orders paid from minute 5 on (and so to every
    attempt from then: the earlier orders were delivered)."""
    step = int(order_id.split("-")[2])
    return DeliveryFailed("HTTP 503", retry=True) if step >= 5 else None


async def reconciler_reads_a_partition_again(w: World, i: int) -> None:
    await orders(w, i, "card", 2)
    if i == 2:
        w.reconciler.observe.skipped("payments.events")
        w.reconciler.observe.read_again("payments.events", "hole")


# --- commands no payment stands behind (the ledger's RetryCredit, payments' IssueRefund), re-drives elsewhere ---


async def commands_without_payment(w: World, i: int) -> None:
    """At minute 5 the ledger gets a retry for an order it has no payment for (parked), one contradicting the
    payment and one naming none; payments gets refunds for an unknown order, an unpaid one, above the amount paid,
    for another amount and for an order credited; the ledger gets compensations for another user and above the
    credit (and one it grants). At minute 8 the parked retry's park time has passed with no payment."""
    await orders(w, i, "card", 2)
    if i == 5:
        w.commands.retry_credit("ord-forged-1", PAID, paid=False)
        w.commands.retry_credit("ord-forged-2", replace(PAID, amount=60_000), paid=True)
        w.commands.retry_credit("ord-forged-3", None, paid=False)
        w.commands.refund("ord-forged-4", 600, T0, status=None)
        w.commands.refund("ord-forged-5", 600, T0, status=PaymentStatus.PENDING)
        w.commands.refund("ord-forged-6", 700, T0, status=PaymentStatus.SUCCEEDED)
        w.commands.refund("ord-forged-7", 500, T0, status=PaymentStatus.SUCCEEDED)
        w.commands.refund("ord-forged-10", 600, T0, status=PaymentStatus.SUCCEEDED, lifecycle="credited")
        w.commands.compensation("ord-forged-8", "u-other", 50)
        w.commands.compensation("ord-forged-9", PAID.user_id, 60_000)
        w.commands.compensation("ord-late", PAID.user_id, 50)  # the reconciler's own: granted, not counted
    if i == 8:
        w.commands.park_time_passes()


async def redrive_on_the_wrong_topic(w: World, i: int) -> None:
    """At minute 5 a person's re-drive reaches the ledger on ledger.redrives (obeyed), and twice by another way: a
    RedriveCredit on ledger.commands and a RetryCredit there naming who asked. Both are refused, wrong_topic."""
    await orders(w, i, "card", 2)
    if i == 5:
        w.commands.redrive_on(Topic.LEDGER_REDRIVES)
        w.commands.redrive_on(Topic.LEDGER_COMMANDS)
        w.commands.retry_naming_a_person("ord-redriven", "support-key")


async def retry_before_its_payment(w: World, i: int) -> None:
    """A retry overtakes its order's payment at the ledger now and then: it is parked, and the payment answers it."""
    await orders(w, i, "card", 2)
    if i % 4 == 1:
        w.commands.retry_credit(f"ord-early-{i}", PAID, paid=False)
    if i % 4 == 2:
        w.commands.payment_arrives(f"ord-early-{i - 1}")


# --- the money audit (payments, every 5 minutes here as by default) ---


def audits(
    lost_at: tuple[int, ...] = (),
    doubled_from: int | None = None,
    *,
    refund_failed_from: int | None = None,
    first: int = 0,
    fails_from: int | None = None,
) -> Step:
    """An audit every 5 minutes from minute `first`, started at minute `i` of promtool's clock (which starts at the
    Unix epoch, so an audit at minute 0 shows as never run); from minute `fails_from` on, none finishes. From
    minute `refund_failed_from` on, it sees an order never credited whose refund failed at the provider."""

    async def step(w: World, i: int) -> None:
        await orders(w, i, "card", 2)
        due = i >= first and (i - first) % 5 == 0
        if due and fails_from is not None and i >= fails_from:
            w.audit_fails()
        elif due:
            doubled = doubled_from is not None and i >= doubled_from
            failed = refund_failed_from is not None and i >= refund_failed_from
            w.audit(
                EPOCH + timedelta(minutes=i),
                lost=1 if i in lost_at else 0,
                credited_twice=1 if doubled else 0,
                refund_failed=1 if failed else 0,
            )

    return step


# --- support cases (payments re-pages an unacknowledged case after 30 minutes, as by default) ---


async def case_nobody_acknowledges(w: World, i: int) -> None:
    await orders(w, i, "card", 2)
    if i == 5:
        w.cases.open("ord-stuck", CaseKind.NEEDS_SUPPORT, CaseSeverity.PAGE, w.reconciler.clock.at)


async def case_acknowledged_then_resolved(w: World, i: int) -> None:
    await orders(w, i, "card", 2)
    now = w.reconciler.clock.at
    if i == 5:
        w.cases.open("ord-owned", CaseKind.NEEDS_SUPPORT, CaseSeverity.PAGE, now)
    if i == 9:
        w.cases.acknowledge("ord-owned", now)
    if i == 50:
        w.cases.resolve("ord-owned", now)


async def review_overdue_nobody_acknowledges(w: World, i: int) -> None:
    await orders(w, i, "card", 2)
    if i == 5:
        w.cases.open("ord-held", CaseKind.REVIEW_OVERDUE, CaseSeverity.WARNING, w.reconciler.clock.at)


DRAINING = [(0, 0), (5000, 0), (4000, 0), (2000, 0), (500, 0), (0, 0)]

SCENARIOS = {
    s.name: s
    for s in (
        Scenario("dropped_then_credited_by_retry", 15, 45, dropped_then_credited_by_retry, world(20)),
        Scenario(
            "stuck_while_the_ledger_is_down",
            15,
            40,
            stuck_while_the_ledger_is_down,
            world(20, ledger=lambda o: Ledger.SILENT if fate(o) == "down" else Ledger.CREDITS),
        ),
        Scenario("on_time", 15, 40, on_time, world(20)),
        Scenario(
            "refunded_then_escalated",
            60,
            30,
            refunded_then_escalated,
            world(ledger=remediation_ledger, refunds=lambda o: fate(o) != "unrefundable"),
        ),
        Scenario("reconciler_stops_reading", 60, 30, reconciler_stops_reading, world()),
        Scenario("reconciler_far_behind", 60, 30, reconciler_far_behind, world()),
        Scenario("busy_then_idle", 60, 30, busy_then_idle, world()),
        Scenario("one_channel_delays", 60, 41, one_channel_delays, world()),
        Scenario("one_provider_loses_callbacks", 60, 31, one_provider_loses_callbacks, world()),
        Scenario("payments_found_past_their_deadline", 60, 31, payments_found_past_their_deadline, world()),
        Scenario("one_provider_unreachable", 60, 31, one_provider_unreachable, world()),
        Scenario("one_provider_clock_ahead", 60, 31, one_provider_clock_ahead, world()),
        Scenario("credit_without_payment", 60, 20, credit_without_payment, world()),
        Scenario("credit_before_payment", 60, 20, credit_before_payment, world()),
        Scenario("slo_fast_burn", 60, 181, slo(50, 1), world()),
        Scenario("slo_within_budget", 60, 181, slo(50, 40), world()),
        Scenario("slo_slow_burn", 1200, 76, slo(125, 2), world()),
        Scenario("slo_low_traffic_three_late", 60, 91, low_traffic((20, 30, 40)), world()),
        Scenario("slo_low_traffic_one_late", 60, 91, low_traffic((20,)), world()),
        Scenario("payments_down_reconciler_missing", 15, 25, payments_down_reconciler_missing, world()),
        Scenario("notifier_blips", 15, 25, notifier_blips, world()),
        Scenario("payments_database_away", 60, 30, database_away("payments", "outbox relay", 5, 20), world()),
        # A failover: away for one minute, under the alert's two.
        Scenario("ledger_database_blips", 60, 15, database_away("ledger", "consumer ledger.payments", 5, 6), world()),
        Scenario("ledger_lags", 60, 11, lagging([(0, 0), (800, 700)]), world()),
        Scenario(
            "ledger_lag_drains", 60, 11, lagging([(0, 0), (5000, 0), (4000, 0), (2000, 0), (500, 0), (0, 0)]), world()
        ),
        Scenario("payments_outbox_stuck", 60, 11, outbox_ages([0.0, *(60.0 * k for k in range(1, 11))]), world()),
        Scenario(
            "ledger_outbox_stuck", 60, 11, outbox_ages([0.0, *(60.0 * k for k in range(1, 11))], "ledger"), world()
        ),
        Scenario("payments_outbox_drains", 60, 10, outbox_ages([0, 2, 0, 5, 1, 0, 3, 0, 0, 0]), world()),
        Scenario("one_record_dead_lettered", 60, 36, one_record_dead_lettered, world()),
        Scenario(
            "webhook_deliveries_fail",
            60,
            31,
            twelve_orders,
            world(notifier=lambda: Notifier({"webhook": webhook_failing, "webpush": push_subscription_gone})),
        ),
        Scenario(
            "webhook_retries_then_delivers",
            60,
            31,
            twelve_orders,
            world(notifier=lambda: Notifier({"webhook": webhook_busy_once})),
        ),
        Scenario(
            "webhook_receiver_down",
            60,
            31,
            twelve_orders,
            world(notifier=lambda: Notifier({"webhook": webhook_down_from_minute_5}, policy=RetryPolicy())),
        ),
        Scenario(
            "webhook_retried_for_days_delivers",
            60,
            31,
            twelve_orders,
            world(notifier=lambda: Notifier({"webhook": webhook_busy_once}, policy=RetryPolicy())),
        ),
        Scenario("reconciler_reads_a_partition_again", 15, 6, reconciler_reads_a_partition_again, world()),
        Scenario("audit_re_drives_a_lost_payment", 60, 31, audits(lost_at=(10,)), world()),
        Scenario("audit_finds_the_same_order_missing_again", 60, 31, audits(lost_at=(10, 15, 20)), world()),
        Scenario("audit_finds_an_order_credited_twice", 60, 31, audits(doubled_from=10), world()),
        Scenario("audit_finds_an_order_whose_refund_failed", 60, 31, audits(refund_failed_from=10), world()),
        Scenario(
            "audit_finds_a_failed_refund_beside_a_missing_credit",
            60,
            31,
            audits(lost_at=(10, 15, 20), refund_failed_from=10),
            world(),
        ),
        Scenario("audit_stops_succeeding", 60, 31, audits(first=1, fails_from=16), world()),
        Scenario("audit_never_runs", 60, 10, on_time, world()),
        Scenario("commands_without_payment", 60, 25, commands_without_payment, world()),
        Scenario("retry_before_its_payment", 60, 25, retry_before_its_payment, world()),
        Scenario("redrive_on_the_wrong_topic", 60, 25, redrive_on_the_wrong_topic, world()),
        Scenario("case_nobody_acknowledges", 60, 45, case_nobody_acknowledges, world()),
        Scenario("case_acknowledged_then_resolved", 60, 60, case_acknowledged_then_resolved, world()),
        Scenario("review_overdue_nobody_acknowledges", 60, 75, review_overdue_nobody_acknowledges, world()),
    )
}


@cache
def timeline(name: str) -> Timeline:
    """The scrapes of one scenario (played once per test session)."""
    return asyncio.run(play(SCENARIOS[name]))
