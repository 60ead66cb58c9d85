"""Refunds in flight (payments.refunds) on the real PostgreSQL, with scripted providers: commands repeated or
concurrent, askers that die or take their whole lease, follow-ups in several processes, providers gone from the
configuration, adapters that fail: one refund id, one outcome announced, a refund the provider accepted never
requested again, a support case for a refund stuck a day, a round that asks about every refund it took, and the
refunds in flight in the metrics."""

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from contracts.codec import envelope_for
from contracts.commands import IssueRefund
from payments.adapters.metrics import PrometheusPaymentsMetrics
from payments.adapters.postgres import PostgresPayments
from payments.config import Settings
from payments.domain import RefundRequest
from payments.ports import RefundAnswer
from payments.refunds import MAX_ATTEMPTS, RefundFollowUp, follow_up_at, handle_issue_refund
from tests.payments.integration.units import units_of_work
from tests.payments.unit.test_refunds import Pauses, Providers, ScriptedProvider

AMOUNT = 600


class Died(Exception):
    """The process dies here (nothing after this line runs)."""


PAID = """
INSERT INTO orders (order_id, user_id, amount, currency, channel, payment_status, status, provider, provider_txn_id,
                    created_at, paid_at)
VALUES ($1, 'u1', $2, 'CNY', 'card', 'succeeded', 'paid', $3, 'tx-' || $1, now(), now())
"""


class Books:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    def uow(self) -> PostgresPayments:
        return units_of_work(self.pool)()

    async def paid(self, order_id: str, provider: str = "alipay") -> str:
        await self.pool.execute(PAID, order_id, AMOUNT, provider)
        return order_id

    async def refund_row(self, order_id: str) -> asyncpg.Record:
        row = await self.pool.fetchrow("SELECT * FROM refunds WHERE order_id = $1", order_id)
        assert row is not None
        return row

    async def announced(self, order_id: str) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT h->>1 AS t FROM outbox, jsonb_array_elements(headers) h"
            " WHERE key = convert_to($1, 'UTF8') AND h->>0 = 'event_type' ORDER BY id",
            order_id,
        )
        return [r["t"] for r in rows]

    async def cases(self, order_id: str) -> list[str]:
        rows = await self.pool.fetch("SELECT kind, reason FROM support_cases WHERE order_id = $1", order_id)
        return [f"{r['kind']}: {r['reason']}" for r in rows]

    async def issue(
        self, order_id: str, providers: Providers, event_id: str = "cmd-1", provider_timeout_s: float = 1.0
    ) -> None:
        command = IssueRefund(
            order_id=order_id, user_id="u1", amount=AMOUNT, currency="CNY", reason="late",
            requested_at=datetime.now(UTC),
        )  # fmt: skip
        envelope = envelope_for(command, producer="reconciler", event_id=f"{event_id}-{order_id}")
        await handle_issue_refund(
            command, envelope, uow=self.uow, providers=providers, provider_timeout_s=provider_timeout_s, sleep=Pauses()
        )

    async def left_pending(self, order_id: str) -> RefundAnswer:
        """Refund the order through a provider that accepts it and is still making it after every query: it is
        left on record pending. The provider's answer."""
        pending = RefundAnswer("pending", "rf_1")
        await self.issue(order_id, Providers(ScriptedProvider([pending], [pending] * MAX_ATTEMPTS)))
        return pending

    def follow_up(self, providers: Providers, at: datetime) -> RefundFollowUp:
        return RefundFollowUp(self.uow, providers, ask_timeout_s=1.0, clock=lambda: at)


@pytest.fixture
def books(payments_pool: asyncpg.Pool) -> Books:
    return Books(payments_pool)


async def _due_at(books: Books, order_id: str) -> datetime:
    due = (await books.refund_row(order_id))["due_at"]
    assert isinstance(due, datetime)
    return due


async def test_a_command_redelivered_after_the_refund_was_recorded_but_before_the_provider_was_asked_is_refunded_by_the_follow_up(  # noqa: E501
    books: Books,
) -> None:
    order_id = await books.paid("ord_died")
    dead = ScriptedProvider([Died()], [])  # dies on its first ask
    with pytest.raises(Died):
        await books.issue(order_id, Providers(dead))
    assert (await books.refund_row(order_id))["status"] == "requested"
    provider = ScriptedProvider([RefundAnswer("succeeded", "rf_1")], [RefundAnswer("unknown", reason="no such")])
    await books.issue(order_id, Providers(provider))  # redelivered: already processed
    assert provider.calls == []
    due = await _due_at(books, order_id)
    assert await books.follow_up(Providers(provider), due - timedelta(seconds=1)).round() == 0
    assert await books.follow_up(Providers(provider), due).round() == 1
    assert provider.calls == ["query", "refund"]
    assert len({r.refund_id for r in [*dead.requests, *provider.requests]}) == 1
    assert (await books.refund_row(order_id))["status"] == "succeeded"
    assert await books.announced(order_id) == ["RefundSucceeded"]


async def test_two_commands_for_one_order_at_once_ask_the_provider_for_one_refund(books: Books) -> None:
    order_id = await books.paid("ord_twice")
    gate = asyncio.Event()

    class Slow(ScriptedProvider):
        async def refund(self, request: RefundRequest) -> RefundAnswer:
            await gate.wait()
            return await super().refund(request)

    provider = Slow([RefundAnswer("succeeded", "rf_1")] * 2, [])
    first = asyncio.create_task(books.issue(order_id, Providers(provider), "cmd-a"))
    second = asyncio.create_task(books.issue(order_id, Providers(provider), "cmd-b"))
    await asyncio.sleep(0.5)
    gate.set()
    await asyncio.gather(first, second)
    assert provider.calls == ["refund"]
    assert await books.announced(order_id) == ["RefundSucceeded"]


async def test_follow_ups_in_two_processes_at_once_ask_about_a_due_refund_once_and_announce_once(
    books: Books,
) -> None:
    order_id = await books.paid("ord_two_procs")
    await books.left_pending(order_id)
    due = await _due_at(books, order_id)
    gate = asyncio.Event()

    class Slow(ScriptedProvider):
        async def query_refund(self, order_id: str, refund_id: str) -> RefundAnswer:
            await gate.wait()
            return await super().query_refund(order_id, refund_id)

    provider = Slow([], [RefundAnswer("succeeded", "rf_1"), RefundAnswer("failed", reason="?")])
    one = asyncio.create_task(books.follow_up(Providers(provider), due).round())
    await asyncio.sleep(0.3)
    other = await books.follow_up(Providers(provider), due).round()
    gate.set()
    assert (await one, other) == (1, 0)
    assert provider.calls == ["query"]
    assert await books.announced(order_id) == ["RefundSucceeded"]


async def test_an_asker_and_a_follow_up_that_both_hear_an_outcome_record_and_announce_the_first_only(
    books: Books,
) -> None:
    order_id = await books.paid("ord_race")
    await books.left_pending(order_id)
    due = await _due_at(books, order_id)
    succeeded = ScriptedProvider([], [RefundAnswer("succeeded", "rf_1")])
    failed = ScriptedProvider([], [RefundAnswer("failed", reason="late answer")])
    assert await books.follow_up(Providers(succeeded), due).round() == 1
    async with books.uow() as tx:  # a second asker's late answer, after the outcome is on record
        assert not await tx.save_refund(order_id, RefundAnswer("failed", reason="late"), 9)
        assert not await tx.save_refund(order_id, RefundAnswer("pending"), 9, due)
    assert await books.follow_up(Providers(failed), due + timedelta(days=2)).round() == 0
    assert (await books.refund_row(order_id))["status"] == "succeeded"
    assert await books.announced(order_id) == ["RefundSucceeded"]


async def test_a_refund_stuck_for_days_opens_one_case_however_many_rounds_ask(books: Books) -> None:
    order_id = await books.paid("ord_stuck")
    pending = await books.left_pending(order_id)
    provider = ScriptedProvider([], [pending] * 10)
    for day in range(2, 6):
        at = datetime.now(UTC) + timedelta(days=day)
        assert await books.follow_up(Providers(provider), at).round() == 1
    assert len(await books.cases(order_id)) == 1
    assert await books.announced(order_id) == []


async def test_a_refund_whose_provider_is_no_longer_configured_opens_a_support_case_once_a_day_has_passed(
    books: Books,
) -> None:
    order_id = await books.paid("ord_renamed")
    await books.left_pending(order_id)
    nobody = Providers()  # the provider was renamed or dropped from the configuration since
    for day in range(2, 5):
        assert await books.follow_up(nobody, datetime.now(UTC) + timedelta(days=day)).round() == 1
    assert (await books.refund_row(order_id))["status"] == "pending"
    assert len(await books.cases(order_id)) == 1, "a refund nobody can ask about for days opened no support case"


async def test_a_refund_the_provider_accepted_is_never_requested_again_when_a_later_query_goes_unanswered(
    books: Books,
) -> None:
    order_id = await books.paid("ord_accepted")
    provider = ScriptedProvider(
        [RefundAnswer("pending", "rf_1"), RefundAnswer("failed", reason="INVALID_REQUEST: refund no. in use")],
        [TimeoutError("read timeout")],
    )
    await books.issue(order_id, Providers(provider))
    recorded = (await books.refund_row(order_id))["status"]
    asked = ["refund"] + ["query"] * MAX_ATTEMPTS  # only queried after its acceptance, never requested again
    assert (provider.calls, recorded, await books.announced(order_id)) == (asked, "pending", [])


async def test_the_askers_lease_outlasts_its_asks_at_the_longest_provider_timeout_allowed(books: Books) -> None:
    longest = Settings.model_fields["provider_timeout_s"].metadata
    timeout_s = next(m.le for m in longest if getattr(m, "le", None) is not None)
    order_id = await books.paid("ord_slow")
    started = datetime.now(UTC)
    taken: list[int] = []
    unknown = RefundAnswer("unknown", reason="timed out")

    class Slow(ScriptedProvider):
        """Each ask takes the whole provider timeout; at each, another process's follow-up looks for due refunds
        at the time it then is."""

        async def _look(self) -> None:
            at = started + timedelta(seconds=timeout_s * (len(self.calls) + 1))
            later = ScriptedProvider([], [])
            taken.append(await books.follow_up(Providers(later), at).round())

        async def refund(self, request: RefundRequest) -> RefundAnswer:
            await self._look()
            return await super().refund(request)

        async def query_refund(self, order_id: str, refund_id: str) -> RefundAnswer:
            await self._look()
            return await super().query_refund(order_id, refund_id)

    provider = Slow([unknown] * MAX_ATTEMPTS, [unknown] * MAX_ATTEMPTS)
    await books.issue(order_id, Providers(provider), provider_timeout_s=timeout_s)
    assert taken == [0] * len(taken), f"another process took the refund while its asker still asked: {taken}"


async def test_a_refund_whose_provider_adapter_fails_waits_for_its_backoff_and_the_round_still_asks_about_the_others(
    books: Books, caplog: pytest.LogCaptureFixture
) -> None:
    for order_id in ("ord_unreadable", "ord_readable"):
        await books.left_pending(await books.paid(order_id))
    at = max([await _due_at(books, "ord_unreadable"), await _due_at(books, "ord_readable")])
    # The first refund the round asks about meets an answer its adapter cannot read; the second, its outcome.
    provider = ScriptedProvider([], [ValueError("malformed refund answer"), RefundAnswer("succeeded", "rf_2")])
    assert await books.follow_up(Providers(provider), at).round() == 2
    (failed, _), (answered, _) = provider.asked
    assert (await books.refund_row(answered))["status"] == "succeeded"
    assert await books.announced(answered) == ["RefundSucceeded"]
    row = await books.refund_row(failed)
    assert (row["status"], await books.announced(failed)) == ("pending", [])
    assert row["due_at"] == follow_up_at(at, row["attempts"]), "not asked again after an unanswered query's backoff"
    (logged,) = [r for r in caplog.records if r.levelname == "ERROR" and failed in r.getMessage()]
    assert logged.exc_info is not None, "a bug in an adapter is logged without its traceback"


async def test_after_a_round_the_gauges_show_the_refunds_in_flight_by_status_and_how_long_the_oldest_has_waited(
    books: Books,
) -> None:
    requested = await books.paid("ord_requested")
    with pytest.raises(Died):
        await books.issue(requested, Providers(ScriptedProvider([Died()], [])))
    pending = await books.paid("ord_pending")
    await books.left_pending(pending)
    registry = CollectorRegistry()
    metrics = PrometheusPaymentsMetrics(registry, channels=["card"], providers=["alipay"])
    provider = ScriptedProvider([], [])  # no answer: both stay in flight

    def round_at(at: datetime) -> RefundFollowUp:
        return RefundFollowUp(books.uow, Providers(provider), ask_timeout_s=1.0, clock=lambda: at, observer=metrics)

    def shown() -> tuple[float | None, float | None, float | None]:
        counts = [
            registry.get_sample_value("payments_refunds_in_flight", {"status": s}) for s in ("requested", "pending")
        ]
        return counts[0], counts[1], registry.get_sample_value("payments_refund_oldest_in_flight_seconds")

    at = datetime.now(UTC) + timedelta(hours=1)
    assert await round_at(at).round() == 2
    oldest = min([(await books.refund_row(requested))["created_at"], (await books.refund_row(pending))["created_at"]])
    assert shown() == (1, 1, pytest.approx((at - oldest).total_seconds()))
    provider.queries = [RefundAnswer("succeeded", "rf_1"), RefundAnswer("failed", reason="refused")]
    assert await round_at(at + timedelta(hours=2)).round() == 2
    assert shown() == (0, 0, 0)
