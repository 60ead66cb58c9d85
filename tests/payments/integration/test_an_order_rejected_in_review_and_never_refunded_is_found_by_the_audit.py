"""The money audit of an order rejected in risk review, on the real PostgreSQL. The rejection's refund comes by the
stream (OrderReviewRejected, the reconciler's BlockCredit, the ledger's final rejection, IssueRefund): a step of
it lost (a record the broker lost, a command dead-lettered and never replayed) leaves the user's money paid, never
credited and never refunded, and the reconciler waits for the ledger or for the refund with no deadline. The audit,
which reads payments' own books, finds such an order paid in its window once the grace after its rejection has
passed, and never re-drives it (its credit stays blocked: the money goes back by refund); a rejected order
refunded, or with its refund in flight at the provider, is in order."""

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from payments.adapters.audit_books import PostgresAuditBooks
from payments.adapters.auditor import AuditMetrics, Auditor
from payments.audit import Credit
from payments.domain import ReviewVerdict
from payments.review import ReviewDecision, handle_review_decision
from tests.payments.integration.units import units_of_work

HELD_ORDER = """
INSERT INTO orders (order_id, user_id, amount, currency, channel, payment_status, status, provider, provider_txn_id,
                    created_at, paid_at, review_status, review_reason, review_expected_at)
VALUES ($1, 'u1', 600, 'CNY', 'card', 'succeeded', 'under_review', 'sim', 'tx-' || $1, $2, $2, 'held',
        'first top-up', $2::timestamptz + interval '15 minutes')
"""
PAID_CALLBACK = (
    "INSERT INTO callbacks (provider, order_id, received_at, outcome, reason, body)"
    " VALUES ('sim', $1, $2, 'paid', 'payment succeeded', '{}')"
)
ANNOUNCED = "SELECT h->>1 AS event_type FROM outbox, jsonb_array_elements(headers) h WHERE h->>0 = 'event_type'"
REFUND = "INSERT INTO refunds (order_id, refund_id, status, reason, attempts) VALUES ($1, 'r-' || $1, $2, 'ok', 1)"


@pytest.fixture
def pool(payments_pool: asyncpg.Pool) -> asyncpg.Pool:
    return payments_pool


class At:
    """A clock stopped at one time."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> float:
        return self.at.timestamp()


class NoCredits:
    async def credits_between(self, since: datetime, until: datetime) -> list[Credit]:
        return []


async def rejected(pool: asyncpg.Pool, order_id: str, *, paid_at: datetime, rejected_at: datetime) -> None:
    """Held at its payment, then rejected by the risk team through payments' own review use case."""
    await pool.execute(HELD_ORDER, order_id, paid_at)
    await pool.execute(PAID_CALLBACK, order_id, paid_at)
    decision = ReviewDecision(order_id, ReviewVerdict.REJECT, "stolen card")
    result = await handle_review_decision(decision, uow=units_of_work(pool), clock=At(rejected_at))
    assert result.code == "applied"


async def test_an_order_rejected_in_review_and_never_refunded_is_found_after_the_grace_and_not_re_driven(
    pool: asyncpg.Pool,
) -> None:
    now = datetime.now(UTC)
    an_hour_ago = now - timedelta(hours=1)
    await rejected(pool, "ord_lost_refund", paid_at=now - timedelta(hours=2), rejected_at=an_hour_ago)
    await rejected(pool, "ord_refunded", paid_at=now - timedelta(hours=2), rejected_at=an_hour_ago)
    await pool.execute(REFUND, "ord_refunded", "succeeded")
    await rejected(pool, "ord_refunding", paid_at=now - timedelta(hours=2), rejected_at=an_hour_ago)
    await pool.execute(REFUND, "ord_refunding", "pending")
    await rejected(pool, "ord_just_rejected", paid_at=now - timedelta(hours=2), rejected_at=now - timedelta(minutes=1))
    registry = CollectorRegistry()
    books = PostgresAuditBooks(pool, units_of_work(pool))
    auditor = Auditor(books, NoCredits(), AuditMetrics(registry), interval_s=300, window_s=86400, grace_s=180)

    outcome = await auditor.run(now - timedelta(days=1))

    found = sorted((f.order_id, str(f.mismatch)) for f in outcome.findings)
    assert found == [("ord_lost_refund", "missing_credit")]
    assert all("rejected in risk review" in f.detail for f in outcome.findings)
    assert outcome.redriven == []
    assert outcome.report.refunds_in_flight == 1 and outcome.report.in_grace == 1
    assert registry.get_sample_value("payments_audit_mismatches", {"kind": "missing_credit"}) == 1
    announced = await pool.fetch(ANNOUNCED)
    assert {r["event_type"] for r in announced} == {"OrderReviewRejected"}
