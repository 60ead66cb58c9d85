"""One money audit at a time across payments processes, on the real PostgreSQL: the audit's lock, the schedule
shared through the recorded runs, and every process's gauges showing the latest run whichever process ran it.
The ledger's side is a stand-in here (its HTTP read is tested in test_money_audit.py): the subject is the lock."""

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from payments.adapters.audit_books import PostgresAuditBooks
from payments.adapters.auditor import AuditBusy, AuditMetrics, Auditor
from payments.adapters.ledger_credits import LedgerUnreadable
from payments.audit import Credit
from tests.kafka_reader import eventually
from tests.payments.integration.units import units_of_work


class CountedLedger:
    """Answers no credits, counting the reads; holds each read until `gate` opens."""

    def __init__(self) -> None:
        self.reads = 0
        self.gate = asyncio.Event()

    async def credits_between(self, since: datetime, until: datetime) -> list[Credit]:
        self.reads += 1
        await self.gate.wait()
        return []


@pytest.fixture
def books(payments_pool: asyncpg.Pool) -> PostgresAuditBooks:
    return PostgresAuditBooks(payments_pool, units_of_work(payments_pool))


INTERVAL_S = 30.0  # each process ticks every 3 s: long enough that no second audit is due while the test looks


def auditor(books: PostgresAuditBooks, ledger: CountedLedger, registry: CollectorRegistry) -> Auditor:
    metrics = AuditMetrics(registry)
    return Auditor(books, ledger, metrics, interval_s=INTERVAL_S, window_s=3600, grace_s=0, lock_wait_s=0.5)


async def test_while_one_audit_runs_another_process_neither_runs_one_nor_is_refused_silently(
    books: PostgresAuditBooks,
) -> None:
    ledger = CountedLedger()
    first, second = auditor(books, ledger, CollectorRegistry()), auditor(books, ledger, CollectorRegistry())
    running = asyncio.create_task(first.run(datetime.now(UTC) - timedelta(hours=1)))
    await eventually(lambda: ledger.reads == 1, timeout_s=10)

    with pytest.raises(AuditBusy):
        await second.run(datetime.now(UTC) - timedelta(hours=1))
    async with books.exclusive() as held:
        assert held is None

    ledger.gate.set()
    await running
    assert ledger.reads == 1
    async with books.exclusive() as held:
        assert held is not None


async def test_two_processes_on_one_schedule_run_one_audit_per_interval_and_show_the_same_latest_run(
    books: PostgresAuditBooks, database_url: str, isolation: str
) -> None:
    ledger = CountedLedger()
    ledger.gate.set()
    registries = [CollectorRegistry(), CollectorRegistry()]
    tasks = [asyncio.create_task(auditor(books, ledger, r).run_periodically()) for r in registries]
    conn = await asyncpg.connect(database_url, server_settings={"search_path": f"{isolation}_payments"})
    try:
        await eventually(lambda: conn.fetchval("SELECT count(*) FROM audit_runs"), timeout_s=10)
        started = await conn.fetchval("SELECT extract(epoch FROM started_at) FROM audit_runs")

        def shown(registry: CollectorRegistry) -> float | None:
            return registry.get_sample_value("payments_audit_last_run_timestamp_seconds")

        await eventually(lambda: all(shown(r) == pytest.approx(float(started)) for r in registries), timeout_s=15)
        runs = await conn.fetch("SELECT trigger FROM audit_runs")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await conn.close()
    assert [r["trigger"] for r in runs] == ["schedule"]  # both ticked, the interval had not passed again
    assert ledger.reads == 1


class LedgerAwayOnce(CountedLedger):
    async def credits_between(self, since: datetime, until: datetime) -> list[Credit]:
        self.reads += 1
        if self.reads == 1:
            raise LedgerUnreadable("the ledger answered 503")
        return []


async def test_a_scheduled_audit_the_ledger_did_not_answer_is_counted_failed_and_runs_at_the_next_tick(
    books: PostgresAuditBooks,
) -> None:
    registry, ledger = CollectorRegistry(), LedgerAwayOnce()
    metrics = AuditMetrics(registry)
    task = asyncio.create_task(
        Auditor(books, ledger, metrics, interval_s=2, window_s=3600, grace_s=0).run_periodically()
    )
    try:
        ok = {"trigger": "schedule", "outcome": "ok"}
        await eventually(lambda: registry.get_sample_value("payments_audit_runs_total", ok) == 1, timeout_s=15)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    failed = {"trigger": "schedule", "outcome": "failed"}
    assert registry.get_sample_value("payments_audit_runs_total", failed) == 1
    assert ledger.reads >= 2
