"""The money audit of an order held for risk review and released on the real PostgreSQL. payments announces its
PaymentSucceeded at the release, not at the payment: a review can end days after the user paid (held over a
weekend), and the ledger can credit the order only then. An audit of the window the release falls in judges it,
whenever it was paid: never credited, it is a missing credit and is re-driven; credited, it is in order."""

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from payments.adapters.audit_books import PostgresAuditBooks
from payments.adapters.auditor import AuditMetrics, Auditor
from payments.audit import Credit
from tests.payments.integration.units import units_of_work

HELD_ORDER = """
INSERT INTO orders (order_id, user_id, amount, currency, channel, payment_status, status, provider, provider_txn_id,
                    created_at, paid_at, review_status, review_reason, review_expected_at, reviewed_at)
VALUES ($1, 'u1', 600, 'CNY', 'card', 'succeeded', $2, 'sim', 'tx-' || $1, $3, $3, $4, 'first top-up',
        $3::timestamptz + interval '15 minutes', $5)
"""
PAID_CALLBACK = (
    "INSERT INTO callbacks (provider, order_id, received_at, outcome, reason, body)"
    " VALUES ('sim', $1, $2, 'paid', 'payment succeeded', '{}')"
)


@pytest.fixture
def pool(payments_pool: asyncpg.Pool) -> asyncpg.Pool:
    return payments_pool


class Ledger:
    """Answers one credit of 600 CNY to u1 for each of `orders`, whatever the window."""

    def __init__(self, *orders: str) -> None:
        self.orders = orders

    async def credits_between(self, since: datetime, until: datetime) -> list[Credit]:
        return [Credit(o, "u1", 600, "CNY", f"txn-{o}") for o in self.orders]


async def held(
    pool: asyncpg.Pool, order_id: str, *, paid_at: datetime, review: str, decided_at: datetime | None
) -> None:
    status = {"held": "under_review", "released": "paid", "rejected": "review_rejected"}[review]
    await pool.execute(HELD_ORDER, order_id, status, paid_at, review, decided_at)
    await pool.execute(PAID_CALLBACK, order_id, paid_at)


async def test_orders_whose_review_ended_a_day_after_their_payment_are_judged_the_released_one_re_driven(
    pool: asyncpg.Pool,
) -> None:
    now = datetime.now(UTC)
    paid_at = now - timedelta(days=2)
    await held(pool, "ord_released_late", paid_at=paid_at, review="released", decided_at=now - timedelta(hours=1))
    await held(pool, "ord_released_credited", paid_at=paid_at, review="released", decided_at=now - timedelta(hours=1))
    await held(pool, "ord_still_held", paid_at=paid_at, review="held", decided_at=None)
    await held(pool, "ord_rejected", paid_at=paid_at, review="rejected", decided_at=now - timedelta(hours=1))
    registry = CollectorRegistry()
    books = PostgresAuditBooks(pool, units_of_work(pool))
    auditor = Auditor(
        books, Ledger("ord_released_credited"), AuditMetrics(registry), interval_s=300, window_s=86400, grace_s=180
    )

    outcome = await auditor.run(now - timedelta(days=1))

    # Rejected an hour ago and never refunded (a step of the refund's chain lost): its missing refund is found too,
    # and never re-driven (its credit stays blocked).
    found = sorted((f.order_id, str(f.mismatch)) for f in outcome.findings)
    assert found == [("ord_rejected", "missing_credit"), ("ord_released_late", "missing_credit")]
    rejected = next(f for f in outcome.findings if f.order_id == "ord_rejected")
    assert rejected.detail.startswith("rejected in risk review and never refunded")
    assert outcome.redriven == ["ord_released_late"]
    assert registry.get_sample_value("payments_audit_mismatches", {"kind": "missing_credit"}) == 2
    announced = await pool.fetch("SELECT key FROM outbox")
    assert [bytes(r["key"]).decode() for r in announced] == ["ord_released_late"]


async def test_an_order_released_within_the_grace_is_in_flight_however_long_ago_it_was_paid(
    pool: asyncpg.Pool,
) -> None:
    now = datetime.now(UTC)
    released = now - timedelta(minutes=1)
    await held(pool, "ord_just_released", paid_at=now - timedelta(days=3), review="released", decided_at=released)
    books = PostgresAuditBooks(pool, units_of_work(pool))
    auditor = Auditor(books, Ledger(), AuditMetrics(CollectorRegistry()), interval_s=300, window_s=86400, grace_s=180)

    outcome = await auditor.run(now - timedelta(days=1))

    assert outcome.findings == [] and outcome.redriven == []
    assert outcome.report.in_grace == 1
