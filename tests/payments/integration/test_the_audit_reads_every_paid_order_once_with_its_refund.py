"""The money audit's read of payments' own books on the real PostgreSQL: every order paid in the window once,
whatever the page and however many share a paid_at, the window's edges (since included, until excluded), and an
order whose refund the provider has not finished, which is neither a missing credit nor re-driven, and one whose
refund failed, which is its own kind and not re-driven either."""

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from payments.adapters.audit_books import PAGE, PostgresAuditBooks
from payments.adapters.auditor import AuditMetrics, Auditor
from payments.audit import Credit
from tests.payments.integration.units import units_of_work

ORDER = """
INSERT INTO orders (order_id, user_id, amount, currency, channel, payment_status, status, provider, provider_txn_id,
                    created_at, paid_at)
VALUES ($1, 'u1', 600, 'CNY', 'card', 'succeeded', $2, 'sim', 'tx-' || $1, $3, $3)
"""
REFUND = "INSERT INTO refunds (order_id, status, reason, attempts) VALUES ($1, $2, '', 1)"
SINCE = datetime(2026, 3, 1, 12, tzinfo=UTC)
UNTIL = SINCE + timedelta(hours=1)


@pytest.fixture
def pool(payments_pool: asyncpg.Pool) -> asyncpg.Pool:
    return payments_pool


def books_of(pool: asyncpg.Pool, page: int = PAGE) -> PostgresAuditBooks:
    return PostgresAuditBooks(pool, units_of_work(pool), page=page)


class CreditingLedger:
    """Answers one credit of 600 CNY to u1 for each of `orders`, whatever the window."""

    def __init__(self, *orders: str) -> None:
        self.orders = orders

    async def credits_between(self, since: datetime, until: datetime) -> list[Credit]:
        return [Credit(o, "u1", 600, "CNY", f"txn-{o}") for o in self.orders]


@pytest.mark.parametrize("page", [1, 2, 3, 7, 1000])
async def test_every_order_paid_in_the_window_is_read_once_whatever_the_page_and_ties_on_paid_at(
    pool: asyncpg.Pool, page: int
) -> None:
    tied = SINCE + timedelta(minutes=30)
    placed = {
        "a-at-since": SINCE,
        "z-at-since": SINCE,
        "b-tied": tied,
        "a-tied": tied,
        "c-tied": tied,
        "B-tied": tied,
        "tied-1": tied,
        "just-before-until": UNTIL - timedelta(microseconds=1),
        "at-until": UNTIL,
        "before-since": SINCE - timedelta(microseconds=1),
    }
    for order_id, at in placed.items():
        await pool.execute(ORDER, order_id, "paid", at)

    read = [r.order.order_id for r in await books_of(pool, page).paid_between(SINCE, UNTIL)]

    assert sorted(read) == sorted(set(placed) - {"at-until", "before-since"})
    assert len(read) == len(set(read))


async def test_an_uncredited_order_whose_refund_is_still_at_the_provider_is_not_reported_missing_credit(
    pool: asyncpg.Pool,
) -> None:
    """The reconciler refunds an order the ledger blocked for good; while the provider has not finished the refund
    (requested, pending) the order is neither credited nor refunded, and must stay so: it is no credit gone
    missing, and reporting it pages on-call (MoneyAuditMismatch) for an order nobody may re-drive. Credited
    anyway, it is what the audit is there to see: the user gets the currency and, once the refund ends, the money."""
    at = datetime.now(UTC) - timedelta(hours=2)
    placed = {
        "ord_requested": ("remediating", "requested"),
        "ord_pending": ("remediating", "pending"),
        "ord_refunded": ("refunded", "succeeded"),
        "ord_credited_pending": ("remediating", "pending"),
    }
    for order_id, (status, refund) in placed.items():
        await pool.execute(ORDER, order_id, status, at)
        await pool.execute(REFUND, order_id, refund)
    registry = CollectorRegistry()
    ledger = CreditingLedger("ord_credited_pending")
    auditor = Auditor(books_of(pool), ledger, AuditMetrics(registry), interval_s=300, window_s=86400, grace_s=180)

    outcome = await auditor.run(datetime.now(UTC) - timedelta(days=1))

    assert outcome.redriven == []
    assert [(f.order_id, str(f.mismatch)) for f in outcome.findings] == [
        ("ord_credited_pending", "credited_and_refunded")
    ]
    assert (outcome.report.refunds_in_flight, outcome.report.in_grace) == (2, 0)
    assert registry.get_sample_value("payments_audit_mismatches", {"kind": "missing_credit"}) == 0
    assert registry.get_sample_value("payments_audit_mismatches", {"kind": "credited_and_refunded"}) == 1


async def test_an_uncredited_order_whose_refund_failed_is_refund_failed_on_its_own_gauge_and_not_re_driven(
    pool: asyncpg.Pool,
) -> None:
    """A refund the provider refused leaves the order paid, never credited and never refunded: a person owns it
    through the reconciler's needs_support case, which pages. Shown as missing_credit it paged a second time
    (MoneyAuditMismatch) for an order the re-drive cannot help; refund_failed is its own kind, which does not."""
    await pool.execute(ORDER, "ord_failed", "needs_support", datetime.now(UTC) - timedelta(hours=2))
    await pool.execute(REFUND, "ord_failed", "failed")
    registry = CollectorRegistry()
    auditor = Auditor(
        books_of(pool), CreditingLedger(), AuditMetrics(registry), interval_s=300, window_s=86400, grace_s=180
    )

    outcome = await auditor.run(datetime.now(UTC) - timedelta(days=1))

    assert outcome.redriven == [] and outcome.report.to_redrive() == []
    assert [(f.order_id, str(f.mismatch)) for f in outcome.findings] == [("ord_failed", "refund_failed")]
    assert registry.get_sample_value("payments_audit_mismatches", {"kind": "refund_failed"}) == 1
    assert registry.get_sample_value("payments_audit_mismatches", {"kind": "missing_credit"}) == 0


async def test_the_latest_recorded_audit_keeps_its_refunds_in_flight_for_the_process_that_did_not_run_it(
    pool: asyncpg.Pool,
) -> None:
    """Every payments process shows the latest audit read back from audit_runs, whichever process ran it. The run
    recorded its findings and the orders in grace but not the orders whose refund was still at the provider: read
    back, the run had none, so only the process that ran the audit showed them. An audit recorded before they were
    kept reads back as none, not as an error that would leave every gauge unset."""
    at = datetime.now(UTC) - timedelta(hours=2)
    for order_id, refund in (("ord_requested", "requested"), ("ord_pending", "pending")):
        await pool.execute(ORDER, order_id, "remediating", at)
        await pool.execute(REFUND, order_id, refund)
    books = books_of(pool)
    ran = Auditor(
        books, CreditingLedger(), AuditMetrics(CollectorRegistry()), interval_s=300, window_s=86400, grace_s=180
    )
    await ran.run(datetime.now(UTC) - timedelta(days=1))

    latest = await books.latest()
    elsewhere = CollectorRegistry()
    assert latest is not None
    AuditMetrics(elsewhere).show(latest)

    assert latest.refunds_in_flight == 2
    assert elsewhere.get_sample_value("payments_audit_refunds_in_flight") == 2
    await pool.execute(
        "INSERT INTO audit_runs (trigger, since, until, started_at, counts, redriven, in_grace)"
        " VALUES ('request', $1, $1, now() + interval '1 minute', '{\"credited_twice\": 1}', 0, 0)",
        at,
    )
    older = await books.latest()
    assert older is not None and (older.counts, older.refunds_in_flight) == ({"credited_twice": 1}, 0)
